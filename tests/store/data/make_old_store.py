"""Makes a frozen store for tests/store/test_store_schema.py with the Dvolver on PYTHONPATH, an older commit's
checkout: one finished NAS-Bench-201 table search named 'frozen' and, where that Dvolver has tokens, a
token named 'frozen' for 'alice', printed once.

    git worktree add --detach /tmp/old COMMIT
    PYTHONPATH=/tmp/old .venv/bin/python tests/store/data/make_old_store.py OUT.sqlite ../shared/data/nb201_cifar10.csv
"""

import sys

from dvolver.api import run_search
from dvolver.store import Store

target, table = sys.argv[1:]
run_search({"name": "frozen", "space": "nb201", "space_options": {"table": table}, "objectives": ["acc", "flops"],
            "population": 4, "evaluations": 8, "seed": 3}, db=target, executor="inline")
store = Store(target)
if hasattr(store, "create_token"):
    print(store.create_token("frozen", owner="alice"))
store.engine.dispose()  # the last connection out checkpoints the WAL: the file alone holds everything
