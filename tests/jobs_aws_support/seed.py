"""Seeds a moto server for tests/jobs_aws.rs, through boto3 (the real AWS client).

Usage: python3 seed.py ENDPOINT_URL < spec.json, where spec.json is
  {"region": "eu-west-1",
   "log_groups": [{"name": "/aws/lambda/x", "streams": {"s1": [[ts_ms, "message"], ...]}}],
   "metrics": [{"function": "f", "metric": "Invocations", "ts": unix_seconds, "value": 1}]}
Log groups that exist already are reused (a test adds events in several steps).
"""
import datetime
import json
import sys

import boto3


def main():
    endpoint = sys.argv[1]
    spec = json.load(sys.stdin)
    kw = dict(
        endpoint_url=endpoint,
        region_name=spec.get("region", "eu-west-1"),
        aws_access_key_id="seed",
        aws_secret_access_key="seed",
    )
    logs = boto3.client("logs", **kw)
    for group in spec.get("log_groups", []):
        name = group["name"]
        try:
            logs.create_log_group(logGroupName=name)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        for stream, events in group.get("streams", {}).items():
            try:
                logs.create_log_stream(logGroupName=name, logStreamName=stream)
            except logs.exceptions.ResourceAlreadyExistsException:
                pass
            events = sorted(events, key=lambda e: e[0])
            for i in range(0, len(events), 1000):
                chunk = events[i : i + 1000]
                out = logs.put_log_events(
                    logGroupName=name,
                    logStreamName=stream,
                    logEvents=[{"timestamp": ts, "message": msg} for ts, msg in chunk],
                )
                rejected = out.get("rejectedLogEventsInfo")
                if rejected:
                    raise SystemExit(f"moto rejected events of {name}/{stream}: {rejected}")
    cw = boto3.client("cloudwatch", **kw)
    for m in spec.get("metrics", []):
        cw.put_metric_data(
            Namespace="AWS/Lambda",
            MetricData=[
                {
                    "MetricName": m["metric"],
                    "Dimensions": [{"Name": "FunctionName", "Value": m["function"]}],
                    "Timestamp": datetime.datetime.fromtimestamp(m["ts"], datetime.timezone.utc),
                    "Value": m["value"],
                    "Unit": "Count",
                }
            ],
        )
    print("seeded")


if __name__ == "__main__":
    main()
