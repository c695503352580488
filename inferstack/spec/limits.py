"""The spec's limits on size and count, in one place: what validate, the API, the policy pack, Pulumi's check and
the JSON Schema (`inferstack schema`, `/openapi.json`) all state.

Why limits at all: every value here ends up somewhere finite — an argv and an environment that `execve` must take
(Linux refuses a string over 128 KiB and all of them past ~2 MiB with E2BIG), a process per replica, a row per
object that every write validates again, an HTTP header the gateway compares. A spec past a limit could never run,
or would slow every later write of the control plane; it is refused up front, with the limit named.

Text limits count characters (code points, as JSON Schema's maxLength does), so a schema-valid value is a valid
value; the byte budgets below hold even when every character takes four bytes in UTF-8."""

from __future__ import annotations

# --- text ----------------------------------------------------------------------------------------------------------
MAX_NAME = 200                 # service and deployment names (domain.md)
MAX_REF = 128                  # inventory names and references, zones, GPU types, mount sources
MAX_IMAGE_REF = 512            # image references (preset names, custom images, URLs)
MAX_DESCRIPTION = 1024         # descriptions (domain.md)
MAX_LABEL = 256                # short free text: schedule names, model registry references and versions
MAX_PATH = 4096                # absolute paths (mounts, model paths): PATH_MAX
MAX_HTTP_PATH = 2048           # an HTTP probe's request target
MAX_HEADER_NAME = 256          # header names (an HTTP token; the Gateway API's limit)
MAX_HEADER_VALUE = 4096        # header values matched by header rules (the Gateway API's limit)
MAX_ENV_NAME = 256             # env names
MAX_ENV_VALUE = 16 * 1024      # one env value or secret: 64 KiB in UTF-8 at most, under MAX_ARG_STRLEN (128 KiB)
MAX_ENV_TOTAL = 64 * 1024      # NAME=value over a role's whole environment: 256 KiB in UTF-8 at most
MAX_ARG = 16 * 1024            # one argv item
MAX_ARGV_ITEMS = 256           # items of one argv (entry command, probe command, image command)
MAX_ARGV_TOTAL = 32 * 1024     # characters over one argv: with the environment well under ARG_MAX (2 MiB)
MAX_CIDR = 64
MAX_CRON = 128

# --- counts --------------------------------------------------------------------------------------------------------
MAX_REPLICAS = 1000            # instances of one role: replicas, autoscaling bounds, schedule counts
MAX_DEPLOYMENTS_PER_SERVICE = 64
MAX_SERVICES = 500             # services of one stack file, and of one platform
MAX_DEPLOYMENTS = 2000         # deployments over all services of one stack file, and of one platform
MAX_ROLES = 16                 # roles of a multi_role deployment
MAX_PORTS = 16                 # a service's call ports; a deployment's call ports
MAX_HEADER_RULES = 64
MAX_SCHEDULES = 32
MAX_METRIC_RULES = 16
MAX_MOUNTS = 32
MAX_ENV_VARS = 1024            # entries of one env list (the total size is the real bound)
MAX_INGRESS_RULES = 256
MAX_INVENTORY_OBJECTS = 1000   # objects of one inventory kind
MAX_CAPACITY_ENTRIES = 256     # compute specs one queue offers
MAX_CAPACITY = 100_000         # instances of one compute spec in one queue

# --- numbers -------------------------------------------------------------------------------------------------------
MAX_TIMEOUT_S = 86_400.0       # a request timeout at the gateway: one day (the event loop's timers stay exact)
MAX_PROBE_S = 3600.0           # probe delays, periods and timeouts
MAX_THRESHOLD = 1000           # probe success/failure thresholds
MIN_METRIC_TARGET = 0.001      # metric targets: the HPA formula divides by them
MAX_METRIC_TARGET = 1e9
MAX_CPU = 1024.0               # CPUs of one instance or machine
MAX_MEMORY_GIB = 65536.0       # GiB of one instance
MAX_GPUS = 64                  # GPUs of one instance or machine
MAX_PRICE = 1e6                # price per instance-hour
