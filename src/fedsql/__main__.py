from fedsql.cli import main

raise SystemExit(main())
