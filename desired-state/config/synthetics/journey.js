// k6 multi-step synthetic journey (LLD §9, "box vantage").
//
// One run = one pass over the steps below, then the results are pushed to the
// internal Pushgateway as group job=synthetic-journey / vantage=<VANTAGE>.
// The k6-journey service repeats the run every JOURNEY_INTERVAL seconds.
//
// Metrics pushed (vantage comes from the grouping key):
//   journey_step_up{step}                  1 = step passed, 0 = failed or challenged
//   journey_step_challenged{step}          1 = Cloudflare managed challenge (403), not an outage
//   journey_step_duration_seconds{step}    wall time of the step, redirects included
//   journey_up                             1 = no step is down (challenged steps do not count as down)
//   journey_total_duration_seconds         wall time of all steps
//   journey_last_run_timestamp_seconds     end of this run (Unix seconds)
//
// Environment:
//   VANTAGE                  vantage name (default "box-hel1")
//   PUSHGATEWAY_URL          default http://pushgateway:9091
//   X_TLS_SYNTHETIC          bypass token sent as X-Tls-Synthetic to our own hosts
//                            (falls back to SYNTHETIC_BYPASS_TOKEN); with the Cloudflare
//                            WAF allow-rule it lets the probe reach the origin
//   JOURNEY_STEP_TIMEOUT     per-request timeout (default 20s)
//   JOURNEY_MARKETING_URL, JOURNEY_APP_URL, JOURNEY_OBS_URL   base URLs (defaults below)

import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';

const VANTAGE = (__ENV.VANTAGE || 'box-hel1').replace(/[^A-Za-z0-9_.-]/g, '_');
const PUSHGATEWAY_URL = (__ENV.PUSHGATEWAY_URL || 'http://pushgateway:9091').replace(/\/+$/, '');
const BYPASS_TOKEN = __ENV.X_TLS_SYNTHETIC || __ENV.SYNTHETIC_BYPASS_TOKEN || '';
const STEP_TIMEOUT = __ENV.JOURNEY_STEP_TIMEOUT || '20s';

const MARKETING_URL = (__ENV.JOURNEY_MARKETING_URL || 'https://tlsstress.art').replace(/\/+$/, '');
const APP_URL = (__ENV.JOURNEY_APP_URL || 'https://app.tlsstress.art').replace(/\/+$/, '');
const OBS_URL = (__ENV.JOURNEY_OBS_URL || 'https://obs.tlsstress.art').replace(/\/+$/, '');

// Each step decides for itself what "passed" means.
const STEPS = [
  {
    name: 'landing',
    url: `${MARKETING_URL}/`,
    passed: (res) => res.status >= 200 && res.status < 400 && bodyText(res).length > 0,
  },
  {
    name: 'login_page',
    url: `${APP_URL}/login`,
    passed: (res) => res.status >= 200 && res.status < 400,
  },
  {
    // Deep readiness: SELECT 1 on every DB pool; 503 means a database is unreachable.
    name: 'api_ready',
    url: `${APP_URL}/api/ready`,
    passed: (res) => res.status === 200,
  },
  {
    name: 'grafana',
    url: `${OBS_URL}/grafana/api/health`,
    passed: (res) => {
      if (res.status !== 200) return false;
      try {
        return JSON.parse(bodyText(res)).database === 'ok';
      } catch (e) {
        return false;
      }
    },
  },
];

export const options = {
  vus: 1,
  iterations: 1,
  // The verdict is the pushed metrics, not the k6 exit code; no thresholds.
  userAgent: 'tlsstress-synthetic-journey/1.0 (k6)',
  summaryTrendStats: ['avg', 'max'],
};

function bodyText(res) {
  return typeof res.body === 'string' ? res.body : '';
}

function header(res, name) {
  // k6 canonicalizes response header names (Cf-Mitigated, Server, ...)
  const value = res.headers[name];
  return typeof value === 'string' ? value.toLowerCase() : '';
}

// A Cloudflare managed challenge answers 403 with cf-mitigated: challenge (and a
// challenge page). It proves the edge is up but hides the origin from us.
function isManagedChallenge(res) {
  if (res.status !== 403) return false;
  if (header(res, 'Cf-Mitigated') === 'challenge') return true;
  return header(res, 'Server').includes('cloudflare') &&
    /challenge-platform|cf-chl-|Just a moment/i.test(bodyText(res));
}

function ownHost(url) {
  return /^https:\/\/([a-z0-9-]+\.)*tlsstress\.art(\/|$)/i.test(url);
}

function runStep(step) {
  const headers = {};
  if (BYPASS_TOKEN && ownHost(step.url)) {
    headers['X-Tls-Synthetic'] = BYPASS_TOKEN;
  }
  const started = Date.now();
  const res = http.get(step.url, {
    headers,
    timeout: STEP_TIMEOUT,
    redirects: 5,
    tags: { step: step.name, vantage: VANTAGE },
  });
  const seconds = (Date.now() - started) / 1000;

  const challenged = isManagedChallenge(res);
  const up = !challenged && res.error_code === 0 && step.passed(res);

  check(res, { [`${step.name} ok`]: () => up || challenged });
  console.log(`journey vantage=${VANTAGE} step=${step.name} status=${res.status}` +
    ` up=${up ? 1 : 0} challenged=${challenged ? 1 : 0} seconds=${seconds.toFixed(3)}`);

  return { step: step.name, up, challenged, seconds };
}

// Prometheus text exposition format (version 0.0.4). The grouping key adds
// job and vantage, so the samples carry only their own labels.
function renderMetrics(results, totalSeconds, finishedAt) {
  const lines = [];
  const family = (name, help, samples) => {
    lines.push(`# HELP ${name} ${help}`);
    lines.push(`# TYPE ${name} gauge`);
    for (const [labels, value] of samples) {
      lines.push(`${name}${labels} ${value}`);
    }
  };
  const perStep = (fn) => results.map((r) => [`{step="${r.step}"}`, fn(r)]);

  family('journey_step_up', 'Whether the journey step passed on the last run (1) or not (0).',
    perStep((r) => (r.up ? 1 : 0)));
  family('journey_step_challenged',
    'Whether the step got a Cloudflare managed challenge (403) instead of the page.',
    perStep((r) => (r.challenged ? 1 : 0)));
  family('journey_step_duration_seconds', 'Wall time of the journey step, redirects included.',
    perStep((r) => r.seconds.toFixed(3)));

  const down = results.some((r) => !r.up && !r.challenged);
  family('journey_up', 'Whether no journey step was down on the last run.', [['', down ? 0 : 1]]);
  family('journey_total_duration_seconds', 'Wall time of the whole journey.',
    [['', totalSeconds.toFixed(3)]]);
  family('journey_last_run_timestamp_seconds', 'Unix time at which the last journey run ended.',
    [['', finishedAt.toFixed(0)]]);

  return lines.join('\n') + '\n';
}

export default function () {
  const started = Date.now();
  const results = STEPS.map(runStep);
  const finished = Date.now();

  const body = renderMetrics(results, (finished - started) / 1000, finished / 1000);
  const target = `${PUSHGATEWAY_URL}/metrics/job/synthetic-journey/vantage/${encodeURIComponent(VANTAGE)}`;

  // PUT replaces the whole group, so a step removed from STEPS disappears too.
  // Pushed from the VU itself: teardown() cannot see this iteration's results.
  const res = http.put(target, body, {
    headers: { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' },
    timeout: '10s',
    tags: { step: 'push' },
  });
  if (res.status < 200 || res.status >= 300) {
    exec.test.abort(`push to ${target} failed: status=${res.status} error=${res.error}`);
  }
}

export function handleSummary(data) {
  const checks = data.metrics.checks ? data.metrics.checks.values : {};
  return {
    stdout: `journey summary vantage=${VANTAGE} checks_passed=${checks.passes || 0}` +
      ` checks_failed=${checks.fails || 0}\n`,
  };
}
