"""taxo-pipeline: choose and run a product-taxonomy classifier."""

import warnings

# The partition mappings and observable sources the graph is built on are Dagster beta/preview APIs, chosen
# on purpose and pinned (dagster<1.14); their warnings, printed at every import, are nothing a user can act on.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")
