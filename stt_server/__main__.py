import sys

from stt_server.cli import main

sys.exit(main())
