"""A real PACS for integration tests: Orthanc 1.10 (Debian ``orthanc`` + ``orthanc-dicomweb``).

Orthanc 1.10 binds its DICOM and HTTP ports on every interface, so it is started inside a private network
namespace of its own (``unshare --net`` with only ``lo`` up). Inside that namespace the ports are fixed
(DICOM 4242, HTTP 8042, and 11112 for the C-MOVE destination); nothing outside the namespace can reach them.

The test process (in the host namespace) reaches Orthanc through small in-process TCP forwarders:
a listener on the host's ``127.0.0.1:<ephemeral>`` whose connections are relayed to ``127.0.0.1:<port>``
inside the namespace. The namespace side of a forwarder is a socket created by a short-lived thread that has
``setns()``-ed into Orthanc's namespace (a socket belongs to the namespace it was created in, whatever thread
uses it later). C-MOVE uses the reverse direction: Orthanc connects to ``127.0.0.1:11112`` inside its
namespace and the forwarder relays to the local Storage SCP on the host's loopback. Only loopback addresses
are ever used, on both sides.

Public API (everything a test needs for the gateway round trip)::

    with start_orthanc(workdir) as pacs:                    # OrthancServer; pacs.startup_s
        stats = store_files(pacs, dicom_files(study_dir))   # C-STORE; StoreStats (per_instance_s)
        got = fetch_study(pacs, study_uid, in_dir)          # C-MOVE (default), "c-get" or "wado-rs"
        run_app(in_dir, out_dir)                            # e.g. cli_app_runner() -> python -m app -i -o
        store_files(pacs, dicom_files(out_dir))
        series = qido_series(pacs, study_uid)               # QIDO-RS /dicom-web/studies/{uid}/series

or all of it at once with :func:`pacs_roundtrip`. Requires root (network namespaces) and ``pynetdicom``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

ORTHANC_BIN_NAMES = ("Orthanc",)
DICOMWEB_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)
ORTHANC_AET = "ORTHANC"
GATEWAY_AET = "GATEWAY"  # our Storage SCP / SCU, known to Orthanc as a modality
# Ports inside Orthanc's private namespace: fixed, since nothing else lives there.
NS_DICOM_PORT = 4242
NS_HTTP_PORT = 8042
NS_MOVE_DEST_PORT = 11112

_CLONE_NEWNET = 0x40000000
_LOOPBACK = "127.0.0.1"


class OrthancUnavailable(RuntimeError):
    """Orthanc, its DICOMweb plugin or the rights to make a network namespace are missing."""


def find_orthanc() -> tuple[str, str]:
    """Return (Orthanc binary, DICOMweb plugin path) or raise :class:`OrthancUnavailable` saying what is missing.

    ``$ORTHANC_BIN`` overrides the binary (a path that does not exist counts as missing).
    """
    if os.environ.get("ORTHANC_BIN"):
        binary = os.environ["ORTHANC_BIN"] if os.access(os.environ["ORTHANC_BIN"], os.X_OK) else None
    else:
        binary = next((b for b in map(shutil.which, ORTHANC_BIN_NAMES) if b), None)
        if binary is None and os.access("/usr/sbin/Orthanc", os.X_OK):  # /usr/sbin may be off a user's PATH
            binary = "/usr/sbin/Orthanc"
    plugin = next((p for p in DICOMWEB_PLUGIN_CANDIDATES if os.path.exists(p)), None)
    missing = []
    if binary is None:
        missing.append("Orthanc binary (Debian package 'orthanc')")
    if plugin is None:
        missing.append("DICOMweb plugin (Debian package 'orthanc-dicomweb')")
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            missing.append(f"'{tool}' (Debian packages util-linux / iproute2)")
    if os.geteuid() != 0:
        missing.append("root (needed for a private network namespace)")
    if missing:
        raise OrthancUnavailable(
            "cannot run the PACS round trip: missing " + "; ".join(missing)
            + ". Install with: bash packaging/ci/install_system_deps.sh"
        )
    assert binary is not None and plugin is not None
    return binary, plugin


# --------------------------------------------------------------------------------------------------------------
# network namespace plumbing
# --------------------------------------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def _socket_in_netns(netns_fd: int | None) -> socket.socket:
    """A new TCP socket in the namespace ``netns_fd`` (None: this process's own namespace)."""
    if netns_fd is None:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    box: dict[str, object] = {}

    def worker() -> None:  # setns() on a throw-away thread: only that thread changes namespace
        try:
            if _libc.setns(netns_fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")
            box["sock"] = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["err"] = exc

    t = threading.Thread(target=worker, name="netns-socket", daemon=True)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]  # type: ignore[misc]
    return box["sock"]  # type: ignore[return-value]


class TcpForwarder:
    """Relay TCP connections from ``127.0.0.1:port`` in one namespace to ``127.0.0.1:target_port`` in another.

    ``listen_netns``/``connect_netns`` are namespace fds (None: this process's namespace). ``port`` is the
    listening port (0: ephemeral, read it back from ``.port``). Stop with :meth:`close`.
    """

    def __init__(self, target_port: int, *, listen_netns: int | None = None, connect_netns: int | None = None,
                 port: int = 0) -> None:
        self.target_port = target_port
        self._connect_netns = connect_netns
        self._listener = _socket_in_netns(listen_netns)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((_LOOPBACK, port))
        self._listener.listen(32)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name=f"fwd-{self.port}", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = _socket_in_netns(self._connect_netns)
                upstream.connect((_LOOPBACK, self.target_port))
            except OSError:
                client.close()
                continue
            for s in (client, upstream):  # a relay must not add Nagle/delayed-ACK stalls (~40 ms each)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._open.update((client, upstream))
            remaining = [2]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, client, upstream, remaining),
                                 name=f"fwd-{self.port}-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, a: socket.socket, b: socket.socket,
              remaining: list[int]) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            with self._lock:
                remaining[0] -= 1
                if remaining[0] == 0:  # both directions done
                    for s in (a, b):
                        self._open.discard(s)
                        s.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._thread.join(timeout=2)
        with self._lock:
            for s in list(self._open):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._open.clear()


# --------------------------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------------------------
@dataclass
class OrthancServer:
    """A running Orthanc in its own network namespace, reachable from this process on host loopback.

    ``dicom_port``/``http_port`` are host-loopback ports (forwarders); ``startup_s`` is seconds from process
    start until ``/system`` answered; ``workdir`` holds ``orthanc.json``, ``orthanc.log`` and ``storage/``.
    """

    process: subprocess.Popen
    netns_fd: int
    workdir: Path
    dicom_port: int
    http_port: int
    startup_s: float
    aet: str = ORTHANC_AET
    _forwarders: list[TcpForwarder] = field(default_factory=list, repr=False)
    _move_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{_LOOPBACK}:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def http(self, path: str, *, method: str = "GET", body: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request to Orthanc's REST/DICOMweb API; returns (status, headers, body) without raising."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()

    def get_json(self, path: str, accept: str = "application/json") -> object:
        status, _, body = self.http(path, headers={"Accept": accept})
        if status != 200:
            raise RuntimeError(f"GET {path} -> HTTP {status}: {body[:300]!r}")
        return json.loads(body) if body.strip() else []

    def stop(self, timeout: float = 10.0, wait: bool = True) -> None:
        """Drop the forwarders and the namespace fd, SIGTERM Orthanc by PID and (``wait``) reap it.

        Orthanc 1.10 needs 2-3 s to stop cleanly (its servers poll); ``wait=False`` returns at once and leaves
        :meth:`wait_stopped` for later (it is unreachable already: the forwarders are gone).
        """
        for fwd in self._forwarders:
            fwd.close()
        self._forwarders.clear()
        if self.netns_fd >= 0:
            os.close(self.netns_fd)  # the namespace lives on while Orthanc does, then disappears with it
            self.netns_fd = -1
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        if wait:
            self.wait_stopped(timeout)

    def wait_stopped(self, timeout: float = 10.0) -> int:
        """Wait for Orthanc to exit after :meth:`stop`; SIGKILL it after ``timeout`` s. Returns its exit code."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=timeout)


def _orthanc_config(workdir: Path, plugin: str, sync_storage: bool) -> dict:
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    perms = {"AllowEcho": True, "AllowFind": True, "AllowGet": True, "AllowMove": True, "AllowStore": True}
    return {
        "Name": "sacral-map-test-pacs",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "StorageCompression": False,
        "SyncStorageArea": sync_storage,  # fsync per instance; off by default: the test's data is throw-away
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "HttpServerEnabled": True,
        "HttpPort": NS_HTTP_PORT,
        "RemoteAccessAllowed": False,  # only 127.0.0.1 inside the namespace talks to it (the forwarder)
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": ORTHANC_AET,
        "DicomPort": NS_DICOM_PORT,
        "DicomCheckCalledAet": False,
        "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "UnknownSopClassAccepted": True,
        "DicomModalities": {
            "gateway": {"AET": GATEWAY_AET, "Host": _LOOPBACK, "Port": NS_MOVE_DEST_PORT, **perms},
        },
        "DeidentifyLogs": True,
        "SaveJobs": False,
        "ConcurrentJobs": 1,
        "StableAge": 1,
        "HttpTimeout": 60,
        "DicomScuTimeout": 30,
        "LuaScripts": [],
    }


def _wait_for_netns(pid: int, proc: subprocess.Popen, deadline: float) -> int:
    """Open /proc/<pid>/ns/net once ``unshare`` has moved the child into a namespace different from ours."""
    own = os.readlink("/proc/self/ns/net")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != own:
                fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                if os.readlink(f"/proc/{pid}/ns/net") != own:  # still the child's (pid not reused)
                    return fd
                os.close(fd)
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError("Orthanc's network namespace did not appear (unshare --net failed?)")


def start_orthanc_server(workdir: Path, *, timeout: float = 30.0, sync_storage: bool = False) -> OrthancServer:
    """Start Orthanc in a fresh network namespace with its storage under ``workdir``; wait until it answers.

    The process is ``unshare --net -- setpriv --pdeathsig TERM -- sh -c 'ip link set lo up && exec Orthanc cfg'``
    so its PID is Orthanc's and it gets SIGTERM if the thread that started it dies (call this from the main
    thread, as pytest fixtures are). Raises :class:`OrthancUnavailable` if Orthanc is not installed and
    RuntimeError (with the log's tail) if it does not come up within ``timeout`` seconds. Stop it with
    :meth:`OrthancServer.stop` or use :func:`start_orthanc` as a context manager.
    """
    binary, plugin = find_orthanc()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "orthanc.json"
    config.write_text(json.dumps(_orthanc_config(workdir, plugin, sync_storage), indent=2))
    log = open(workdir / "orthanc.log", "wb")  # noqa: SIM115 - handed to the child
    cmd = ["unshare", "--net", "--"]
    if shutil.which("setpriv"):
        cmd += ["setpriv", "--pdeathsig", "TERM", "--"]
    cmd += ["sh", "-c", 'ip link set lo up && exec "$0" "$1"', binary, str(config)]
    t0 = time.monotonic()
    deadline = t0 + timeout
    # DCMTK (Orthanc's DICOM stack) sets TCP_NODELAY on its sockets only when this variable is 1; without it
    # Nagle + delayed ACKs cost ~40 ms per DIMSE exchange (C-STORE 90 ms/instance instead of ~4 ms).
    env = {**os.environ, "TCP_NODELAY": "1"}
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            cwd=workdir, env=env, start_new_session=True)
    log.close()
    server: OrthancServer | None = None
    try:
        netns_fd = _wait_for_netns(proc.pid, proc, deadline)
        http_fwd = TcpForwarder(NS_HTTP_PORT, connect_netns=netns_fd)
        dicom_fwd = TcpForwarder(NS_DICOM_PORT, connect_netns=netns_fd)
        server = OrthancServer(process=proc, netns_fd=netns_fd, workdir=workdir, dicom_port=dicom_fwd.port,
                               http_port=http_fwd.port, startup_s=float("nan"),
                               _forwarders=[http_fwd, dicom_fwd])
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with code {proc.returncode}:\n{server.log_tail()}")
            try:
                status, _, body = server.http("/system", timeout=1.0)
                if status == 200 and json.loads(body).get("DicomAet") == ORTHANC_AET:
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s:\n{server.log_tail()}")
            time.sleep(0.02)
        server.startup_s = time.monotonic() - t0
        plugins = server.get_json("/plugins")
        if "dicom-web" not in plugins:  # type: ignore[operator]
            raise RuntimeError(f"DICOMweb plugin not loaded (plugins: {plugins}):\n{server.log_tail()}")
        return server
    except BaseException:
        if server is not None:
            server.stop()
        else:
            proc.kill()
            proc.wait()
        raise


@contextmanager
def start_orthanc(workdir: Path, **kwargs: object) -> Iterator[OrthancServer]:
    """Context manager around :func:`start_orthanc_server`; always stops Orthanc by PID on exit."""
    server = start_orthanc_server(workdir, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------------------
# DICOM helpers
# --------------------------------------------------------------------------------------------------------------
def dicom_files(folder: Path) -> list[Path]:
    """Every DICOM Part 10 file (with the ``DICM`` preamble) under ``folder``, recursively, sorted by path."""
    out = []
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            try:
                with open(p, "rb") as f:
                    f.seek(128)
                    if f.read(4) == b"DICM":
                        out.append(p)
            except OSError:
                continue
    return out


@dataclass
class StoreStats:
    """Result of :func:`store_files`: instances sent, total seconds, seconds per instance (association incl.)."""

    n: int
    seconds: float
    per_instance_s: list[float]

    @property
    def mean_per_instance_s(self) -> float:
        return self.seconds / self.n if self.n else float("nan")


@contextmanager
def _tcp_nodelay() -> Iterator[None]:
    """Have pynetdicom's requestor sockets set TCP_NODELAY while inside (pynetdicom 3.0 never sets it).

    Without it, a C-STORE's command and dataset PDUs are two writes that Nagle + the peer's delayed ACK hold
    back ~40 ms. Patches the private ``AssociationSocket._create_socket``; if that ever disappears, nothing is
    patched and only speed suffers.
    """
    from pynetdicom import transport

    orig = getattr(transport.AssociationSocket, "_create_socket", None)
    if orig is None:
        yield
        return

    def create_socket(self, address):  # noqa: ANN001, ANN202 - same signature as pynetdicom's
        sock = orig(self, address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    transport.AssociationSocket._create_socket = create_socket
    try:
        yield
    finally:
        transport.AssociationSocket._create_socket = orig


def _associate(ae, server: OrthancServer, **kwargs):  # noqa: ANN001, ANN202
    """``ae.associate`` to Orthanc through the host-side DICOM forwarder, with TCP_NODELAY."""
    with _tcp_nodelay():
        return ae.associate(_LOOPBACK, server.dicom_port, ae_title=server.aet, **kwargs)


def _ae(**kw: float):  # pynetdicom imported lazily so that a missing pynetdicom is reported by the fixture
    from pynetdicom import AE

    ae = AE(ae_title=GATEWAY_AET)
    ae.acse_timeout = kw.get("acse_timeout", 15)
    ae.dimse_timeout = kw.get("dimse_timeout", 120)
    ae.network_timeout = kw.get("network_timeout", 120)
    return ae


def store_files(server: OrthancServer, files: Iterable[Path]) -> StoreStats:
    """C-STORE ``files`` (DICOM Part 10) to Orthanc over one association; raise if any status is not 0x0000.

    Presentation contexts are built from the files' own SOP classes and transfer syntaxes, so compressed
    (e.g. JPEG 2000) and derived objects (SEG, SR) are sent as they are, without transcoding.
    """
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("store_files: no files to send")
    datasets: list[Dataset] = []
    pairs: dict[str, set[str]] = {}
    for f in files:
        ds = pydicom.dcmread(f)
        if not ds.get("SOPClassUID") or not ds.get("SOPInstanceUID"):
            raise ValueError(f"store_files: {f.name} has an empty SOPClassUID/SOPInstanceUID; no PACS stores it")
        datasets.append(ds)
        pairs.setdefault(str(ds.SOPClassUID), set()).add(str(ds.file_meta.TransferSyntaxUID))
    n_ctx = sum(len(v) for v in pairs.values())
    if n_ctx > 128:
        raise ValueError(f"store_files: {n_ctx} SOP class/transfer syntax pairs; split the call (max 128)")
    ae = _ae()
    for sop_class, syntaxes in pairs.items():
        for ts in sorted(syntaxes):
            ae.add_requested_context(sop_class, ts)
    t0 = time.monotonic()
    assoc = _associate(ae, server)
    if not assoc.is_established:
        raise RuntimeError(f"C-STORE association to Orthanc rejected/aborted:\n{server.log_tail()}")
    per: list[float] = []
    try:
        for f, ds in zip(files, datasets):
            t = time.monotonic()
            status = assoc.send_c_store(ds)
            per.append(time.monotonic() - t)
            if not status or status.Status != 0x0000:
                code = getattr(status, "Status", None)
                raise RuntimeError(f"C-STORE of {f.name} failed (status {code!r})")
    finally:
        assoc.release()
    return StoreStats(n=len(files), seconds=time.monotonic() - t0, per_instance_s=per)


def _save_received(event, out_dir: Path, received: list[Path]) -> int:
    """Storage SCP handler: write the received dataset as ``<SOPInstanceUID>.dcm`` (Part 10, as encoded)."""
    sop_uid = str(event.request.AffectedSOPInstanceUID)
    path = out_dir / f"{sop_uid}.dcm"
    with open(path, "wb") as f:
        f.write(event.encoded_dataset())
    received.append(path)
    return 0x0000


def _study_identifier(study_uid: str) -> Dataset:
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study_uid
    return ident


def _check_retrieve_responses(responses, what: str, server: OrthancServer) -> None:
    final = None
    for status, _ in responses:
        if not status:
            raise RuntimeError(f"{what}: no response / connection lost:\n{server.log_tail()}")
        if status.Status not in (0xFF00, 0xFF01):
            final = status
    if final is None or final.Status != 0x0000:
        code = None if final is None else f"0x{final.Status:04X}"
        raise RuntimeError(f"{what} ended with status {code}:\n{server.log_tail()}")


def _fetch_c_move(server: OrthancServer, study_uid: str, out_dir: Path) -> list[Path]:
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

    received: list[Path] = []
    scp_ae = _ae()
    for cx in AllStoragePresentationContexts:  # every transfer syntax: Orthanc sends what it stored, untouched
        scp_ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    handlers = [(evt.EVT_C_STORE, _save_received, [out_dir, received])]
    with server._move_lock:
        scp = scp_ae.start_server((_LOOPBACK, 0), block=False, evt_handlers=handlers)
        reverse = None
        try:
            reverse = TcpForwarder(scp.server_address[1], listen_netns=server.netns_fd, port=NS_MOVE_DEST_PORT)
            scu_ae = _ae()
            scu_ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = _associate(scu_ae, server)
            if not assoc.is_established:
                raise RuntimeError(f"C-MOVE association rejected:\n{server.log_tail()}")
            try:
                responses = assoc.send_c_move(_study_identifier(study_uid), GATEWAY_AET,
                                              StudyRootQueryRetrieveInformationModelMove)
                _check_retrieve_responses(responses, "C-MOVE", server)
            finally:
                assoc.release()
        finally:
            if reverse is not None:
                reverse.close()
            scp.shutdown()
    return sorted(received)


def _fetch_c_get(server: OrthancServer, study_uid: str, out_dir: Path, sop_classes: Iterable[str]) -> list[Path]:
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    received: list[Path] = []
    ae = _ae()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for sop_class in sop_classes:  # C-GET needs a storage context (SCP role) per SOP class we expect
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        roles.append(build_role(sop_class, scp_role=True))
    assoc = _associate(ae, server, ext_neg=roles,
                       evt_handlers=[(evt.EVT_C_STORE, _save_received, [out_dir, received])])
    if not assoc.is_established:
        raise RuntimeError(f"C-GET association rejected:\n{server.log_tail()}")
    try:
        responses = assoc.send_c_get(_study_identifier(study_uid), StudyRootQueryRetrieveInformationModelGet)
        _check_retrieve_responses(responses, "C-GET", server)
    finally:
        assoc.release()
    return sorted(received)


def _split_multipart(content_type: str, body: bytes) -> list[bytes]:
    """Bodies of the parts of a ``multipart/related`` payload (RFC 2046), as WADO-RS returns it."""
    boundary = None
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise ValueError(f"no boundary in Content-Type {content_type!r}")
    delim = b"--" + boundary.encode()
    parts = []
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):  # closing delimiter
            break
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        parts.append(payload)
    return parts


def _fetch_wado_rs(server: OrthancServer, study_uid: str, out_dir: Path) -> list[Path]:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    status, headers, body = server.http(f"/dicom-web/studies/{study_uid}", headers={"Accept": accept},
                                        timeout=120)
    if status != 200:
        raise RuntimeError(f"WADO-RS study retrieve -> HTTP {status}: {body[:300]!r}")
    ctype = next(v for k, v in headers.items() if k.lower() == "content-type")
    out = []
    for part in _split_multipart(ctype, body):
        from io import BytesIO

        ds = pydicom.dcmread(BytesIO(part), stop_before_pixels=True)
        path = out_dir / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(part)
        out.append(path)
    return sorted(out)


def fetch_study(server: OrthancServer, study_uid: str, out_dir: Path, method: str = "c-move",
                sop_classes: Iterable[str] | None = None) -> list[Path]:
    """Retrieve a whole study from Orthanc into ``out_dir`` (flat, ``<SOPInstanceUID>.dcm``), as a gateway does.

    ``method``: ``"c-move"`` (to a local Storage SCP, AET ``GATEWAY``; the default), ``"c-get"`` (needs the
    ``sop_classes`` to expect, default CT Image Storage) or ``"wado-rs"``. Returns the written files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if method == "c-move":
        return _fetch_c_move(server, study_uid, out_dir)
    if method == "c-get":
        return _fetch_c_get(server, study_uid, out_dir, sop_classes or ["1.2.840.10008.5.1.4.1.1.2"])
    if method == "wado-rs":
        return _fetch_wado_rs(server, study_uid, out_dir)
    raise ValueError(f"fetch_study: unknown method {method!r} (c-move, c-get, wado-rs)")


def qido_studies(server: OrthancServer) -> list[dict]:
    """QIDO-RS ``/dicom-web/studies``: every study in Orthanc, as DICOM JSON."""
    return server.get_json("/dicom-web/studies", accept="application/dicom+json")  # type: ignore[return-value]


def qido_series(server: OrthancServer, study_uid: str) -> list[dict]:
    """QIDO-RS ``/dicom-web/studies/{uid}/series``: the study's series as DICOM JSON (tags as 8-hex keys)."""
    path = f"/dicom-web/studies/{study_uid}/series?includefield=00201209&includefield=0008103E"
    return server.get_json(path, accept="application/dicom+json")  # type: ignore[return-value]


def dicom_json_value(item: dict, tag: str, default: object = None) -> object:
    """First value of ``tag`` (8 hex digits, e.g. ``"00080060"``) in a DICOM JSON object."""
    values = item.get(tag.upper(), {}).get("Value")
    return values[0] if values else default


# --------------------------------------------------------------------------------------------------------------
# the round trip
# --------------------------------------------------------------------------------------------------------------
RunApp = Callable[[Path, Path], None]


def cli_app_runner(cmd: list[str] | None = None, timeout: float = 1800.0, env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> RunApp:
    """A ``run_app(input_dir, output_dir)`` that runs ``cmd + ['-i', IN, '-o', OUT]`` (default ``python -m app``).

    Raises ``subprocess.CalledProcessError`` (with the output tail) if the app exits non-zero.
    """
    base = list(cmd) if cmd else [sys.executable, "-m", "app"]

    def run_app(input_dir: Path, output_dir: Path) -> None:
        proc = subprocess.run([*base, "-i", str(input_dir), "-o", str(output_dir)], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=cwd)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, proc.args,
                                                output=proc.stdout[-4000:], stderr=proc.stderr[-4000:])

    return run_app


@dataclass
class RoundTripResult:
    """What :func:`pacs_roundtrip` did and saw: timings in seconds, files, and the study's series via QIDO-RS."""

    study_uid: str
    store_in: StoreStats
    fetched: list[Path]
    fetch_s: float
    app_s: float
    output_files: list[Path]
    store_out: StoreStats
    series: list[dict]

    def modalities(self) -> list[str]:
        return sorted(str(dicom_json_value(s, "00080060")) for s in self.series)


def pacs_roundtrip(server: OrthancServer, study_dir: Path, run_app: RunApp, workdir: Path,
                   fetch_method: str = "c-move") -> RoundTripResult:
    """Gateway round trip: C-STORE ``study_dir`` -> fetch it back into ``workdir/input`` -> ``run_app(input,
    output)`` -> C-STORE every DICOM file in ``workdir/output`` -> QIDO-RS the study's series.

    ``study_dir`` must hold exactly one study. Makes no assertions about the app's output beyond "at least one
    DICOM file"; the caller asserts on :attr:`RoundTripResult.series`.
    """
    files = dicom_files(study_dir)
    if not files:
        raise ValueError(f"no DICOM files under {study_dir}")
    study_uids = {str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
                      .StudyInstanceUID) for f in files}
    if len(study_uids) != 1:
        raise ValueError(f"{study_dir} holds {len(study_uids)} studies; expected one")
    (study_uid,) = study_uids
    workdir = Path(workdir)
    input_dir, output_dir = workdir / "input", workdir / "output"
    for d in (input_dir, output_dir):
        d.mkdir(parents=True, exist_ok=True)

    store_in = store_files(server, files)
    t = time.monotonic()
    sop_classes = {str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPClassUID"]).SOPClassUID)
                   for f in files}
    fetched = fetch_study(server, study_uid, input_dir, method=fetch_method, sop_classes=sop_classes)
    fetch_s = time.monotonic() - t
    t = time.monotonic()
    run_app(input_dir, output_dir)
    app_s = time.monotonic() - t
    outputs = dicom_files(output_dir)
    if not outputs:
        raise RuntimeError(f"run_app wrote no DICOM file into {output_dir}")
    store_out = store_files(server, outputs)
    return RoundTripResult(study_uid=study_uid, store_in=store_in, fetched=fetched, fetch_s=fetch_s,
                           app_s=app_s, output_files=outputs, store_out=store_out,
                           series=qido_series(server, study_uid))
