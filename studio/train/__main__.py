"""The trainer process: `python -m studio.train RUN_DIR [--resume STEP]`, alone or under `accelerate launch`.

Stop signals are caught before anything heavy is imported (studio.train.stop_signal); then the worker runs.
"""

import sys

from studio.train import stop_signal

stop_signal.install()

from studio.train.trainer import main  # noqa: E402  (after the handler: importing torch takes seconds)

sys.exit(main(sys.argv[1:]))
