from holynb.cli import main

raise SystemExit(main())
