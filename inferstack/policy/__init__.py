"""The spec's rules as a pulumi-policy pack: one stack policy per rule id of `inferstack.spec.RULES` — errors
mandatory, warnings advisory — run over the stack's inferstack resources as the engine sees them.

    pulumi preview --policy-pack inferstack/policy

The pack itself (a gRPC server that never returns) is built only in `inferstack/policy/__main__.py`; import the
policies from here to test them."""

from .policies import POLICIES, STACK_TYPES, policy_for, stack_violations

__all__ = ["POLICIES", "STACK_TYPES", "policy_for", "stack_violations"]
