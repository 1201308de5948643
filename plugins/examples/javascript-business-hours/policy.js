// Example policy in JavaScript: production downloads and key releases only
// during business hours (UTC), judged by the request's own time, so the
// decision is reproducible in `modelvault policy test`.
//
// Config: `hours` = "START-END" in UTC hours (default "8-18"),
//         `environments` = comma-separated gated environments (default "production").
// Build:  npx jco componentize policy.js --wit ../../../wit/since_v0.1.0 --world-name policy --disable all -o policy.wasm
// Test:   modelvault policy test policy.wasm cases.json

function configValue(config, key, fallback) {
  for (const [k, v] of config) {
    if (k === key) return v;
  }
  return fallback;
}

export const evaluator = {
  evaluate(request, config) {
    if (request.action !== "download" && request.action !== "key-release") {
      return { outcome: "abstain", reasonCode: "hours.not-gated", reason: "action not gated by time" };
    }
    const gated = configValue(config, "environments", "production").split(",").map((s) => s.trim());
    const env = request.context.environment;
    if (!gated.includes(env)) {
      return { outcome: "abstain", reasonCode: "hours.not-gated", reason: `${env} is not gated by time` };
    }
    const [start, end] = configValue(config, "hours", "8-18").split("-").map((s) => parseInt(s, 10));
    const hour = new Date(request.context.time).getUTCHours();
    if (Number.isNaN(hour) || Number.isNaN(start) || Number.isNaN(end)) {
      return { outcome: "deny", reasonCode: "hours.misconfigured", reason: "cannot read the time window" };
    }
    if (hour >= start && hour < end) {
      return { outcome: "allow", reasonCode: "hours.open", reason: `${hour}:00 UTC is within ${start}-${end}` };
    }
    return { outcome: "deny", reasonCode: "hours.closed", reason: `${hour}:00 UTC is outside ${start}-${end}` };
  },
};
