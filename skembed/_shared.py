"""Forward-pass states shared by sibling processes through files: each document goes through
the network once among the worker processes of a grid search.

The state cache (:mod:`skembed.cache`) lives in one process. Joblib's workers in a
``GridSearchCV(..., n_jobs=2)`` fit candidates and folds side by side, and each would run the
network over every document of the search itself. So the first process of a session (the one
that uses skembed and starts the workers) names a folder, which the processes it starts
inherit through the environment variable ``SKEMBED_SHARED_STATES``: it does so on first use
(cloning, pickling or fitting a skembed estimator), never at import. A child process about to
run the network on a batch *claims* the batch's documents there, runs them, and publishes
their states; a sibling that needs a document claimed by another waits for it instead of
computing it again (after its own work: no process waits while it holds unfinished claims).

The folder holds one entry per document key: a symbolic link, created and replaced
atomically, read with one system call, whose target says where the document stands:

* ``p<pid>-<start time>``: claimed by process ``pid`` (taken over when that process is gone:
  exited, also when its pid was reused by another, or killed and not yet reaped, a zombie);
* ``states-<pid>-<tag>-<n>:<position>``: done, in that batch file (safetensors: reading it
  runs no code; the random tag keeps names unique after pids are reused).

No call waits forever on another process: a claim of a live process that publishes nothing
for :func:`patience` seconds (stopped, deadlocked, thrashing) is left to it, and the waiting
process computes the document itself (the same numbers: the forward pass is deterministic).

The first process removes the folder when it exits or clears its cache. The folder holds at
most the state cache's byte budget of states (all processes' together, give or take a batch).

A directory set with ``set_cache(directory=...)`` is used the same way, except that every
process writes to it (the first one too), it is never removed, and its batch files (in a
``batches`` subfolder) are bounded by ``max_disk_bytes``: those read or written longest ago
are removed first, and their documents computed again when needed.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
import threading
import time

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from ._processes import alive, mark

ENV = "SKEMBED_SHARED_STATES"
_FOLDER_PREFIX = "skembed-states-"
_OFF = "off"
_KEPT = "kept:"  # before the folder's path in ENV: a directory kept across sessions
_BATCHES = "batches"  # the batch files' subfolder in a kept directory (few entries to list)
DEFAULT_DISK_BYTES = 10 << 30  # 10 GiB of states in a kept directory, oldest read first out
_FORMAT = b"states-1"  # in every entry name: processes that write another layout never meet


def _session_folder() -> str:
    """A new temporary folder name for this process's session (made on first write)."""
    name = f"{_FOLDER_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    return os.path.join(tempfile.gettempdir(), name)


def _remove_stale(parent: str) -> None:
    """Remove the folders of sessions whose first process is gone (it could not clean up)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(_FOLDER_PREFIX):
            continue
        pid = name[len(_FOLDER_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not alive(f"p{pid}"):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


class SharedStates:
    """The folder of states shared with sibling processes, seen from this process.

    Only processes started by the session's first process take part (the first process
    runs nothing side by side with itself); ``enabled`` switches this process's part off.
    """

    def __init__(self):
        # Inherited from the session's first process (this is a sibling), or None: then this
        # is a first process, and the folder is named on first use (see ``start``).
        self.root: str | None = os.environ.get(ENV)
        # A directory set by set_cache(directory=...): kept across sessions, written by every
        # process (the first one too), bounded by ``max_disk_bytes``.
        self.kept = self.root is not None and self.root.startswith(_KEPT)
        if self.kept:
            self.root = self.root[len(_KEPT) :]
        self.max_disk_bytes = DEFAULT_DISK_BYTES
        # The session's temporary folder (inherited, or named by ``start``): where states go
        # when no directory is kept, also after one was (workers started before still use it).
        self._session = None if self.kept else self.root
        self._owner_pid: int | None = None  # the first process; a fork of it is a sibling
        self.enabled = self.root != _OFF
        self.hits = 0  # documents read from the folder
        self.writes = 0  # documents published to it
        self.bytes = 0  # bytes this process wrote (the budget counts the folder's: ``_usage``)
        self._batches = 0
        self._prefixes: dict = {}
        self._held: set[str] = set()  # entries claimed by this process and not yet done
        self._marked: tuple[int, str] = (-1, "")
        self._tags: tuple[int, str] = (-1, "")
        self._lock = threading.Lock()

    def start(self) -> None:
        """In a first process, on first use (never at import): name the session's folder,
        export it to the processes started from now on (joblib's workers inherit the
        environment), have it removed at exit, and remove the folders of sessions that are
        gone. Nothing in a sibling, or once done."""
        if self.root is not None:
            return
        with self._lock:
            if self.root is not None:
                return
            _remove_stale(tempfile.gettempdir())
            root = _session_folder()
            self._owner_pid = os.getpid()
            self.root = self._session = root
            self._export()
            atexit.register(self.remove)

    def _export(self) -> None:
        """Tell the processes started from now on (they read the environment at import)."""
        if not self.enabled:
            os.environ[ENV] = _OFF
        else:
            os.environ[ENV] = (_KEPT if self.kept else "") + self.root

    def keep_in(self, directory: str | os.PathLike | None) -> None:
        """Keep states in ``directory`` from now on, across processes and sessions (made if
        missing, never removed by skembed); None: back to a temporary folder of this
        session. In the first process, also for the processes it starts from now on."""
        self.start()
        if directory is None:
            if self.kept:
                self.kept, self.root = False, self._session
                if self.owner:
                    self._export()
            return
        root = os.path.abspath(os.path.expanduser(os.fspath(directory)))
        os.makedirs(root, exist_ok=True)
        self.kept, self.root = True, root
        if self.owner:
            self._export()

    def _mark(self) -> str:
        """This process's claim target (read once per process: a fork gets its own)."""
        if self._marked[0] != os.getpid():
            self._marked = (os.getpid(), mark(os.getpid()))
        return self._marked[1]

    @property
    def owner(self) -> bool:
        """Whether this is the session's first process, which owns the folder."""
        return self._owner_pid == os.getpid()

    @property
    def active(self) -> bool:
        """Whether this process shares states with its siblings."""
        return self.enabled and (self.kept or not self.owner) and self.root not in (None, _OFF)

    def usable(self) -> bool:
        """Whether a call should look in the folder: in a sibling, or in the first process
        once its workers made the folder (it reads their states, as for the refit of a grid
        search, but claims and writes nothing: it runs nothing side by side with itself)."""
        return self.active or (self.enabled and self.owner and os.path.isdir(self.root))

    def set_enabled(self, enabled: bool) -> None:
        """Switch sharing on or off here; in the first process, for the processes it starts
        from now on (they read the environment when they start)."""
        self.enabled = bool(enabled)
        self.start()
        if self.owner:
            self._export()

    # -- names -----------------------------------------------------------------
    def names(self, keys: list[tuple]) -> list[str]:
        """Entry names of state-cache keys ``(*prefix, document digest)``."""
        out = []
        for key in keys:
            prefix = key[:-1]
            base = self._prefixes.get(prefix)
            if base is None:
                base = hashlib.blake2b(repr(prefix).encode(), digest_size=16, salt=_FORMAT)
                self._prefixes[prefix] = base
            h = base.copy()
            h.update(key[-1])
            out.append(h.hexdigest())
        return out

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    # -- claims ------------------------------------------------------------------
    def look(self, names: list[str]) -> list[str | None]:
        """Where each document stands: a ``file:position`` target, ``"p<pid>"`` or None."""
        out: list[str | None] = []
        for name in names:
            try:
                out.append(os.readlink(self._path(name)))
            except OSError:
                out.append(None)
        return out

    def claim(self, names: list[str]) -> tuple[list[int], list[int], dict[int, str]]:
        """Claim the documents nobody computes: ``(claimed, pending elsewhere, done)``, as
        positions in ``names``; ``done`` maps positions to their targets. A claim of a
        process that is gone is taken over. When the folder cannot be written, sharing stops
        here and every document not done counts as claimed (this process computes it); the
        first process counts them as claimed without writing anything."""
        mine, pending, done = [], [], {}
        me = self._mark()
        for k, (name, target) in enumerate(zip(names, self.look(names))):
            if target is not None and not target.startswith("p"):
                done[k] = target
                continue
            if target is not None:
                mine_before = target == me and name in self._held  # another thread's claim
                if mine_before or (target != me and alive(target)):
                    pending.append(k)
                    continue
                try:  # its process is gone: take it over
                    os.unlink(self._path(name))
                except OSError:
                    pass
            if not self.active or self._link(me, name):
                mine.append(k)
            else:
                pending.append(k)
        if self.active:
            with self._lock:
                self._held.update(names[k] for k in mine)
        return mine, pending, done

    def _link(self, target: str, name: str) -> bool:
        """Create the entry ``name -> target``; False when it exists. The folder is made on
        first use (and again after the first process cleared it); when it cannot be,
        sharing stops (``enabled`` turns False) and the answer is True."""
        try:
            for _ in range(2):
                try:
                    os.symlink(target, self._path(name))
                    return True
                except FileNotFoundError:
                    os.makedirs(self.root, exist_ok=True)
        except FileExistsError:
            return False
        except OSError:
            pass
        self.enabled = False
        return True

    def release(self, names: list[str]) -> None:
        """Give up claims of this process (its forward pass failed, or it keeps nothing)."""
        if not self.active:  # it claims nothing
            return
        me = self._mark()
        with self._lock:
            self._held.difference_update(names)
        for name, target in zip(names, self.look(names)):
            if target == me:
                try:
                    os.unlink(self._path(name))
                except OSError:
                    pass

    # -- states ------------------------------------------------------------------
    def publish(self, names: list[str], tensors: dict[str, torch.Tensor], budget: int) -> bool:
        """Write one batch's states (``tensors``, the documents in the order of ``names``) and
        mark the documents done; False (nothing written) when the folder would hold more than
        ``budget`` bytes of states (of all processes together), or cannot be written (sharing
        then stops here)."""
        if not self.active:
            return False
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        size = sum(t.nbytes for t in tensors.values()) + 1024  # and the file's header, about
        if self.kept:
            if not self._make_room(size):
                return False
        else:
            mine, total = self._usage()
            if total + size > budget:
                return False
        pid = os.getpid()
        with self._lock:
            self._batches += 1
            # Unique across sessions too (a kept directory outlives pids): pid and a random tag.
            file = f"states-{pid}-{self._tag()}-{self._batches}"
            if self.kept:
                file = f"{_BATCHES}/{file}"
        try:
            os.makedirs(self._path(_BATCHES if self.kept else "usage"), exist_ok=True)
            folder, _, base = file.rpartition("/")
            temp = self._path(os.path.join(folder, f"tmp-{base}"))
            save_file(tensors, temp)  # straight to the file: no copy in between
            os.replace(temp, self._path(file))
            for k, name in enumerate(names):
                link = self._path(f"tmp-{pid}-{name}")
                os.symlink(f"{file}:{k}", link)
                os.replace(link, self._path(name))
            if not self.kept:
                temp = self._path(f"usage/tmp-{pid}")
                with open(temp, "w") as f:
                    f.write(str(mine + size))
                os.replace(temp, self._path(f"usage/{pid}"))
        except OSError:
            self.enabled = False
            return False
        with self._lock:
            self._held.difference_update(names)
        self.bytes += size
        self.writes += len(names)
        return True

    def _tag(self) -> str:
        """A random tag of this process (a fork gets its own), in its batch files' names."""
        if self._tags[0] != os.getpid():
            self._tags = (os.getpid(), secrets.token_hex(4))
        return self._tags[1]

    def _make_room(self, size: int) -> bool:
        """In a kept directory: remove the batch files read or written longest ago until
        ``size`` more bytes fit in ``max_disk_bytes``; False when they never can. Their
        documents' entries then name a file that is gone: computed again when needed."""
        if size > self.max_disk_bytes:
            return False
        try:
            with os.scandir(self._path(_BATCHES)) as found:
                stats = [(e.stat(), e.path) for e in found]
        except OSError:  # no batch file yet
            return True
        files = [(st.st_mtime_ns, st.st_size, path) for st, path in stats]
        total = sum(n for _, n, _ in files)
        for _, n, path in sorted(files):
            if total + size <= self.max_disk_bytes:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
                total -= n
        return True

    def _usage(self) -> tuple[int, int]:
        """Bytes of states in the folder: ``(written by this process, by all)``, from one small
        file per process (gone, like the states, when the first process clears the folder)."""
        folder = self._path("usage")
        try:
            names = os.listdir(folder)
        except OSError:
            return 0, 0
        mine, total, me = 0, 0, str(os.getpid())
        for name in names:
            try:
                with open(os.path.join(folder, name)) as f:
                    n = int(f.read())
            except (OSError, ValueError):  # being replaced, or a temporary file
                continue
            total += n
            mine = n if name == me else mine
        return mine, total

    def load(self, file: str) -> dict[str, torch.Tensor] | None:
        """The tensors of a batch file, or None when it is gone (the folder was cleared) or
        unreadable (its documents are then computed again)."""
        try:
            with open(self._path(file), "rb") as f:
                tensors = load_tensors(f.read())
            if self.kept:  # read recently: the last to go when room is needed
                os.utime(self._path(file))
            return tensors
        except Exception:  # OSError, or safetensors' own error on a damaged file
            return None

    def clear(self) -> None:
        """Zero the counters; in the first process (it owns the folder), drop every state,
        except in a kept directory."""
        self.hits = self.writes = 0
        if self.owner and not self.kept:
            self.remove()

    def remove(self) -> None:
        """Remove the session's temporary folder (at exit, in the first process only: not in
        a forked child); a kept directory stays."""
        if not self.owner:
            return
        for folder in {self._session, None if self.kept else self.root}:
            if folder not in (None, _OFF):
                shutil.rmtree(folder, ignore_errors=True)


PATIENCE = 120.0
"""Seconds a call waits for documents that live sibling processes claimed, with none of them
arriving, before it computes them itself (each arrival restarts the clock): see
:func:`patience`."""
PATIENCE_BATCHES = 10
"""... or this many times the call's own slowest batch, when that is longer."""


def patience(batch_seconds: float) -> float:
    """How long a call waits, with nothing arriving, for documents claimed by live siblings.

    A healthy sibling publishes a claim within one forward pass of a batch (it claims a batch
    just before running it), so the bound is :data:`PATIENCE_BATCHES` times the slowest batch
    this call ran itself (``batch_seconds``; siblings run the same model on batches alike), and
    at least :data:`PATIENCE` seconds (two minutes: the call may have run nothing itself, and a
    sibling may share the cores). Past it, the sibling is taken to be stuck (stopped,
    deadlocked, swapping) and the documents are computed here: waiting too little costs one
    forward pass that sharing would have saved, waiting forever costs the call.
    """
    return max(PATIENCE, PATIENCE_BATCHES * batch_seconds)


def wait(step: float) -> float:
    """Sleep ``step`` seconds; the next, longer step (20 ms at most)."""
    time.sleep(step)
    return min(step * 2, 0.02)


SHARED = SharedStates()
