"""Example policy in Python: only models owned by an allow-listed team may
be downloaded or released; everything else is left to the other policies.

Config: `owners` = comma-separated principal ids (default: none allowed).
Build:  componentize-py -d ../../../wit/since_v0.1.0 -w policy componentize app -o policy.wasm
Test:   modelvault policy test policy.wasm cases.json
"""

from wit_world import exports
from wit_world.exports.evaluator import Action, Decision, Outcome


class Evaluator(exports.Evaluator):
    def evaluate(self, request, config):
        if request.action not in (Action.DOWNLOAD, Action.KEY_RELEASE):
            return Decision(Outcome.ABSTAIN, "owners.not-gated", "action not gated by owner")
        allowed = []
        for key, value in config:
            if key == "owners":
                allowed = [o.strip() for o in value.split(",") if o.strip()]
        owner = request.resource.owner
        if owner in allowed:
            return Decision(Outcome.ALLOW, "owners.listed", f"owner {owner} is allow-listed")
        return Decision(Outcome.DENY, "owners.not-listed", f"owner {owner} is not allow-listed")
