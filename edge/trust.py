"""Signed bundles: who vouched for every file of a bundle, checked before a line runs it.

``manifest.json`` in the bundle directory is an append-only history: one entry per action that
changed the bundle (export, each calibration, each engine build), each listing the sha256 of every
file of the bundle directory as that action left it, who signed it (an Ed25519 key made by
``edge-keys --sign``), when, and with which tool. Each entry's signature covers the entry and the
hash of the entry before it, so the history can be added to but not edited. The last entry is the
state the line must find. The format is specified in docs/bundle-format.md.

The line (``trust: {keys: DIR}``) refuses a bundle that is unsigned, whose history does not
verify, whose last signer is not a key in DIR, or whose files differ from the last entry.
Subdirectories of the bundle (edge-eval's ``eval/``, ONNX Runtime's ``ort-trt-cache/``) are
outside the signature: tools write them beside a signed bundle.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

import edge
from edge.bundle import BundleError, sha256_file

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = 1
PRIVATE_SUFFIX = ".ed25519"
PUBLIC_SUFFIX = ".pub"
KEY_VARIABLE = "EDGE_SIGN_KEY"  # the signing key for automation, where --sign-key is not given
# Prefixed to what is signed, so that a signature made here means nothing anywhere else.
_DOMAIN = b"edge-inspect bundle manifest 1\n"

Action = Literal["export", "calibrate", "build-engine"]


class TrustError(BundleError):
    """A bundle the line must not run, or a key or manifest that cannot be used; the message
    says why and what to do."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    name: str  # the key file's name without .ed25519: recorded as the signer
    private: Ed25519PrivateKey = field(repr=False)

    @property
    def public(self) -> str:
        return _b64(self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


@dataclass(frozen=True, slots=True)
class Entry:
    """One action in a bundle's history, as signed."""

    action: Action
    at: str  # ISO 8601, UTC
    signer: str  # the signer's key name, as the signer called it
    key: str  # the signer's Ed25519 public key, raw, base64
    tool: str
    version: str  # edge-inspect's
    detail: str  # what the action made, for people reading the history
    files: dict[str, str]  # every file of the bundle directory after the action → its sha256
    previous: str | None  # digest() of the entry before; None for the first
    signature: str = ""  # base64 Ed25519 signature of signed_bytes()

    def signed_bytes(self) -> bytes:
        fields = asdict(self)
        del fields["signature"]
        return _DOMAIN + _canonical(fields)

    def digest(self) -> str:
        return hashlib.sha256(_canonical(asdict(self))).hexdigest()

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def brief(self) -> str:
        return f"{self.action} by {self.signer} at {self.at}"

    def describe(self) -> str:
        what = f": {self.detail}" if self.detail else ""
        return f"{self.at} {self.action} by {self.signer} (key {self.key_id}) with {self.tool} {self.version}{what}"


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def key_id(public: str) -> str:
    """A short name for a public key (base64 raw): what a person compares."""
    return hashlib.sha256(public.encode("ascii")).hexdigest()[:16]


# -- keys -------------------------------------------------------------------------------


def make_signing_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """An Ed25519 key pair: NAME.ed25519 (private, mode 600) and NAME.pub (public, for the
    line's trust.keys folder). Never overwrites a key."""
    private_path, public_path = folder / f"{name}{PRIVATE_SUFFIX}", folder / f"{name}{PUBLIC_SUFFIX}"
    for path in (private_path, public_path):
        if path.exists():
            raise TrustError(f"{path}: already exists; choose another key name or move the old key away first")
    folder.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with os.fdopen(os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


def load_signing_key(path: str | Path) -> SigningKey:
    path = Path(path)
    fix = f"give the NAME{PRIVATE_SUFFIX} file made by edge-keys --sign"
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as e:
        raise TrustError(f"{path}: cannot read the signing key ({e.strerror or e}); {fix}") from None
    except TypeError:  # cryptography's word for a key that needs a passphrase
        raise TrustError(f"{path}: encrypted with a passphrase, which the tools cannot ask for; {fix}") from None
    except ValueError:
        raise TrustError(f"{path}: not an unencrypted PEM private key; {fix}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise TrustError(f"{path}: a {type(private).__name__}, not an Ed25519 key; {fix}")
    return SigningKey(path.name.removesuffix(PRIVATE_SUFFIX), private)


def add_sign_key_argument(parser: argparse.ArgumentParser) -> None:
    """--sign-key, the same for every tool that changes a bundle."""
    parser.add_argument(
        "--sign-key",
        metavar="NAME.ed25519",
        default=os.environ.get(KEY_VARIABLE) or None,
        help=f"sign what this writes into the bundle with this key (made by edge-keys --sign; default: "
        f"${KEY_VARIABLE}): it is added to the bundle's {MANIFEST_FILE}, which a line with trust.keys "
        "checks. Without a key the bundle is left unsigned (or no longer matches its signature)",
    )


def trusted_keys(folder: Path) -> dict[str, str]:
    """The public keys of a trust.keys folder (every NAME.pub): base64 raw key → NAME."""
    try:
        paths = sorted(folder.glob(f"*{PUBLIC_SUFFIX}"))
    except OSError as e:
        raise TrustError(f"trust.keys {folder}: cannot read it ({e.strerror or e})") from None
    keys = {}
    for path in paths:
        try:
            public = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as e:
            raise TrustError(f"trust.keys {path}: not a PEM public key ({e}); remove it or replace it") from None
        if not isinstance(public, Ed25519PublicKey):
            raise TrustError(f"trust.keys {path}: not an Ed25519 key; use the NAME.pub made by edge-keys --sign")
        keys[_b64(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))] = path.stem
    if not keys:
        raise TrustError(
            f"trust.keys {folder}: no NAME{PUBLIC_SUFFIX} in it, so no bundle could run; put in the public keys "
            "of those who sign bundles (edge-keys --sign)"
        )
    return keys


# -- the manifest -----------------------------------------------------------------------


def bundle_files(root: Path) -> dict[str, str]:
    """Every file of the bundle directory itself (not its subdirectories), but the manifest → sha256."""
    return {p.name: sha256_file(p) for p in sorted(root.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}


def read_history(root: Path) -> list[Entry] | None:
    """The bundle's history, oldest first; None for an unsigned bundle. Not verified (check_history)."""
    path = root / MANIFEST_FILE
    fix = "copy the signed bundle again or re-export it"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TrustError(f"{path}: cannot read it as JSON ({e}); {fix}") from None
    if not isinstance(document, dict) or document.get("schema_version") != MANIFEST_SCHEMA:
        raise TrustError(f"{path}: not a manifest this edge reads (schema_version {MANIFEST_SCHEMA}); {fix}")
    history = document.get("history")
    if not isinstance(history, list) or not history:
        raise TrustError(f"{path}: history must be a non-empty list of entries; {fix}")
    entries = []
    for i, item in enumerate(history):
        try:
            entry = Entry(**item)
        except TypeError as e:
            raise TrustError(f"{path}: history[{i}] is not an entry ({e}); {fix}") from None
        if not _well_formed(entry):
            raise TrustError(f"{path}: history[{i}] is not an entry (a field of the wrong type); {fix}")
        entries.append(entry)
    return entries


def _well_formed(entry: Entry) -> bool:
    text = (entry.at, entry.signer, entry.key, entry.tool, entry.version, entry.detail, entry.signature)
    return (
        entry.action in get_args(Action)
        and all(isinstance(value, str) for value in text)
        and isinstance(entry.previous, (str, type(None)))
        and isinstance(entry.files, dict)
        and all(isinstance(name, str) and isinstance(sha, str) for name, sha in entry.files.items())
    )


def check_history(root: Path, history: list[Entry]) -> None:
    """Every entry signed by the key it names, and linked to the one before: nothing edited,
    removed or put in between."""
    path = root / MANIFEST_FILE
    fix = "the manifest was edited; copy the signed bundle again or re-export it"
    previous = None
    for i, entry in enumerate(history):
        if entry.previous != previous:
            raise TrustError(f"{path}: history[{i}] ({entry.brief()}) does not follow the entry before it; {fix}")
        try:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry.key, validate=True))
            public.verify(base64.b64decode(entry.signature, validate=True), entry.signed_bytes())
        except (InvalidSignature, ValueError, TypeError, binascii.Error):
            raise TrustError(f"{path}: history[{i}] ({entry.brief()}): its signature does not verify; {fix}") from None
        previous = entry.digest()


def differences(root: Path, entry: Entry, ignore: Collection[str] = ()) -> list[str]:
    """How the bundle's files differ from what ``entry`` signed (``ignore``: files not compared)."""
    files = {name: sha256 for name, sha256 in bundle_files(root).items() if name not in ignore}
    signed = {name: sha256 for name, sha256 in entry.files.items() if name not in ignore}
    return (
        [f"{name} changed" for name in sorted(files.keys() & signed.keys()) if files[name] != signed[name]]
        + [f"{name} missing" for name in sorted(signed.keys() - files.keys())]
        + [f"{name} added" for name in sorted(files.keys() - signed.keys())]
    )


def check_unchanged(root: Path, replaced: Collection[str] = ()) -> list[Entry] | None:
    """Before an action signs the bundle: its history verifies and its files are as last signed,
    but ``replaced`` (what the action writes anew), so that a signer never vouches for a file
    someone changed since. Returns the history (None: unsigned, nothing to check)."""
    history = read_history(root)
    if history is None:
        return None
    check_history(root, history)
    changed = differences(root, history[-1], replaced)
    if changed:
        raise TrustError(
            f"{root}: {', '.join(changed)} since the last signature ({history[-1].brief()}); signing now would vouch for that: "
            "copy the signed bundle again or re-export it"
        )
    return history


def sign_bundle(
    root: Path, key: SigningKey, action: Action, tool: str, detail: str = "", written: Collection[str] = ()
) -> Entry:
    """Appends an entry for the bundle's files as they are now, signed with ``key``. ``written``:
    the files this action wrote; every other file must be as last signed (check_unchanged)."""
    history = check_unchanged(root, written) or []
    entry = Entry(
        action=action,
        at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        signer=key.name,
        key=key.public,
        tool=tool,
        version=edge.__version__,
        detail=detail,
        files=bundle_files(root),
        previous=history[-1].digest() if history else None,
    )
    signature = _b64(key.private.sign(entry.signed_bytes()))
    signed = Entry(**{**asdict(entry), "signature": signature})
    document = {"schema_version": MANIFEST_SCHEMA, "history": [asdict(e) for e in [*history, signed]]}
    # Atomic: a line loading the bundle meanwhile reads the old manifest or the new one.
    tmp = root / f"{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST_FILE)
    return signed


def sign_or_warn(
    root: Path, key: SigningKey | None, action: Action, tool: str, detail: str, written: Collection[str]
) -> Entry | None:
    """What a tool does after changing a bundle: sign it with ``key``; without one, warn when the
    bundle was signed, since it no longer matches its manifest."""
    if key is not None:
        entry = sign_bundle(root, key, action, tool, detail, written)
        log.info("%s: signed (%s)", root / MANIFEST_FILE, entry.describe())
        return entry
    if (root / MANIFEST_FILE).exists():
        log.warning(
            "%s: %s changed it without a signing key, so it no longer matches its %s and a line with "
            "trust.keys refuses it; run again with --sign-key (or $%s)",
            root,
            tool,
            MANIFEST_FILE,
            KEY_VARIABLE,
        )
    return None


# -- the line's check -------------------------------------------------------------------


def verify_bundle(root: Path, keys_folder: Path) -> Entry:
    """The line's check of a bundle against its trust.keys folder: the last entry of a history
    that verifies, signed by a key in the folder, and the files it signed. Raises TrustError
    with the reason and the fix."""
    keys = trusted_keys(keys_folder)
    history = read_history(root)
    if history is None:
        raise TrustError(
            f"{root}: unsigned (no {MANIFEST_FILE}), and this line runs only bundles signed by a key in "
            f"trust.keys {keys_folder}; sign it: edge-calibrate --bundle {root} --data GOOD_DIR "
            f"--sign-key NAME{PRIVATE_SUFFIX} (or export it with --sign-key)"
        )
    check_history(root, history)
    last = history[-1]
    if last.key not in keys:
        raise TrustError(
            f"{root}: signed by {last.signer!r} (key {last.key_id}), a key not in trust.keys {keys_folder} "
            f"({last.brief()}); have it signed by an approved key, or, if the plant approves this signer, "
            f"put its {last.signer}{PUBLIC_SUFFIX} into {keys_folder}"
        )
    changed = differences(root, last)
    if changed:
        only_calibration = changed == ["calibration.yaml changed"]
        fix = (
            f"calibrate again with a signing key: edge-calibrate --bundle {root} --data GOOD_DIR --sign-key "
            f"NAME{PRIVATE_SUFFIX}"
            if only_calibration
            else "restore the files as signed (copy the signed bundle again), or re-export it"
        )
        raise TrustError(f"{root}: {', '.join(changed)} after it was signed ({last.brief()}); {fix}")
    log.info("%s: signed by %s, key %s in trust.keys (%s)", root, keys[last.key], last.key_id, last.describe())
    return last


def audit_trail(root: Path, keys_folder: Path | None) -> tuple[list[str], str]:
    """What edge-run --check prints of a bundle: its history, one line per entry, oldest first,
    and one line on whether the line checks it."""
    history = read_history(root) or []
    if not keys_folder:
        checked = "not checked: trust.keys is not set"
    elif history and history[-1].key in trusted_keys(keys_folder):
        checked = f"signed by {history[-1].signer}, a key in trust.keys {keys_folder}"
    else:
        checked = f"NOT signed by a key in trust.keys {keys_folder}"
    return [entry.describe() for entry in history] or [f"none: unsigned (no {MANIFEST_FILE})"], checked
