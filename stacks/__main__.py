"""The stack program: the structured stack config `inferstack:stack` (the stack file's shape) → components.

    pulumi config set --path 'inferstack:stack.services[0].deployments[1].weight' 10
    pulumi preview && pulumi up

The spec's rules run here first, over the whole stack: errors stop the program before anything changes; warnings
and the rules deferred to the platform (references it may hold, values not known yet) are shown by the preview.
"""

import pulumi

from inferstack.components import check_stack, deploy_stack, report_findings

config = pulumi.Config("inferstack")
stack, findings = check_stack(config.require_object("stack"), "inferstack:stack")
report_findings(findings)
assert stack is not None  # field errors are errors: report_findings stopped the program

resources = deploy_stack(stack)
pulumi.export("gatewayUrls", {key: svc.gateway_url for key, svc in resources.services.items()})
pulumi.export("deployments", {key: svc.deployment_keys for key, svc in resources.services.items()})
pulumi.export("status", {key: svc.status for key, svc in resources.services.items()})
