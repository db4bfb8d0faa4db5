"""``python -m fedsql.connectors AGENCY.toml``: run one connector node."""

from fedsql.connectors.main import main

raise SystemExit(main())
