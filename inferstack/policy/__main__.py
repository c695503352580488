"""The policy pack's entry point: the Pulumi engine runs this module and talks to the gRPC server it starts.

    pulumi preview --policy-pack inferstack/policy
"""

from pulumi_policy import EnforcementLevel, PolicyPack

from inferstack.policy import POLICIES

PolicyPack(name="inferstack", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
