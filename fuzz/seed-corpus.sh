#!/usr/bin/env bash
# Fills fuzz/corpus/load_validate (gitignored) from the committed seeds in fuzz/seeds
# and every case of the validation corpus (tests/corpus): each YAML file alone, plus
# each case as one input (first file, NUL, the other files joined as documents).
set -euo pipefail
shopt -s nullglob
here=$(cd "$(dirname "$0")" && pwd)
out="$here/corpus/load_validate"
mkdir -p "$out"
cp "$here"/seeds/* "$out"/
for case in "$here"/../tests/corpus/*/*/; do
  name="$(basename "$(dirname "$case")")-$(basename "$case")"
  files=("$case"*.yaml "$case"*.yml)
  [ ${#files[@]} -gt 0 ] || continue
  for f in "${files[@]}"; do
    cp "$f" "$out/$name-$(basename "$f")"
  done
  {
    cat "${files[0]}"
    printf '\0'
    for f in "${files[@]:1}"; do
      cat "$f"
      printf '\n---\n'
    done
  } > "$out/$name.dir"
done
echo "$(ls "$out" | wc -l) inputs in $out"
