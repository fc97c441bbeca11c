"""Signing keys and folder signatures through OpenSSF model-signing's offline key mode.

model-signing hashes every file of a folder (SHA-256), puts the digests in an in-toto statement,
signs it (ECDSA in a DSSE envelope) and writes a Sigstore bundle, `model.sig`; nothing touches a
network in key mode. It takes EC keys on P-256, P-384 or P-521 only, so the signing key is a key
pair of its own, not an Ethereum key. The standard tool checks a folder signed here, unmodified:

    model_signing verify key DIR --signature DIR/model.sig --public_key KEY.pub

Through the Python API the signature file must be excluded from hashing explicitly (the CLI adds
it itself); extra and missing files always fail verification.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ledger.core.errors import LedgerError
from ledger.core.safe_json import UntrustedJsonError, parse_untrusted_json

SIGNATURE_NAME = "model.sig"
MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0"
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


class SigningKeyError(LedgerError):
    """A signing key that cannot be created or used (exists already, wrong type, readable by others)."""


class SignatureError(LedgerError):
    """The folder does not verify against its `model.sig` and the given public key; the message says why."""


@dataclass(frozen=True)
class SigningKeyFiles:
    private_key: Path
    public_key: Path
    key_id: str  # sha256 of the public key's PEM: the hint model-signing records in model.sig


def new_signing_key(private_key: Path) -> SigningKeyFiles:
    """A fresh EC P-256 key pair: `private_key` (PKCS#8 PEM, mode 0600) and the public key beside it
    with the suffix `.pub` (SubjectPublicKeyInfo PEM). Existing files are never overwritten."""
    public_key = private_key.with_suffix(".pub")
    for path in (private_key, public_key):
        if path.exists():
            raise SigningKeyError(f"{path} exists: signing keys are never overwritten (choose another path)")
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = _public_pem(key.public_key())
    private_key.parent.mkdir(parents=True, exist_ok=True)
    # Created with its final mode (O_EXCL): the private key is never readable by others, not even briefly.
    with os.fdopen(os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        handle.write(private_pem)
    os.chmod(private_key, 0o600)  # a umask cannot widen it, an inherited ACL might: be explicit
    with os.fdopen(os.open(public_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as handle:
        handle.write(public_pem)
    return SigningKeyFiles(private_key, public_key, key_id(public_pem))


def key_id(public_pem: bytes) -> str:
    """model-signing's key hint: SHA-256 of the public key as SubjectPublicKeyInfo PEM, hex."""
    try:
        public = serialization.load_pem_public_key(public_pem)
    except ValueError as exc:
        raise SigningKeyError(f"not a PEM public key: {exc}") from None
    return hashlib.sha256(_public_pem(public)).hexdigest()


def public_key_id(public_key: Path) -> str:
    return key_id(_read(public_key, "public key"))


def check_signing_key(private_key: Path) -> Path:
    """The public key beside `private_key` (same name, `.pub`), after checking the pair is usable:
    the private key readable only by its owner, an EC key model-signing signs with, matching the public one."""
    key = _load_private_key(private_key)
    public_key = private_key.with_suffix(".pub")
    if not public_key.is_file():
        raise SigningKeyError(f"the public key {public_key} is missing beside {private_key}: recipients need it to verify")
    if public_key_id(public_key) != hashlib.sha256(_public_pem(key.public_key())).hexdigest():
        raise SigningKeyError(f"{public_key} is not the public half of {private_key}")
    return public_key


def sign_folder(folder: Path, private_key: Path) -> Path:
    """Sign every file in `folder` into `folder/model.sig`; returns its path."""
    import model_signing

    _load_private_key(private_key)
    signature = folder / SIGNATURE_NAME
    (
        model_signing.signing.Config()
        .use_elliptic_key_signer(private_key=private_key)
        .set_hashing_config(_hashing_config())
        .sign(folder, signature)
    )
    return signature


@dataclass(frozen=True)
class SignedManifest:
    """What a verified `model.sig` vouches for: each file's SHA-256, and the key's id."""

    files: dict[str, str]
    key_id: str


def verify_folder(folder: Path, public_key: Path) -> SignedManifest:
    """model-signing's own verification (the key, the signature, every file's digest, no file extra or
    missing), then the signed manifest. `SignatureError` naming the problem on any failure."""
    import model_signing
    from cryptography.exceptions import InvalidSignature

    signature = folder / SIGNATURE_NAME
    if not signature.is_file():
        raise SignatureError(f"{signature} is missing: the folder is not signed")
    expected_key = public_key_id(public_key)
    try:
        (
            model_signing.verifying.Config()
            .use_elliptic_key_verifier(public_key=public_key)
            .set_hashing_config(_hashing_config())
            .verify(folder, signature)
        )
    except InvalidSignature:  # raised with an empty message
        raise SignatureError(f"{SIGNATURE_NAME}'s signature is not valid for this public key: the bundle was altered") from None
    except ValueError as exc:
        message = str(exc)
        if message.startswith("Signature mismatch"):
            # The signature itself verified, so the manifest is authentic: name the files in hex.
            raise SignatureError("; ".join(_mismatches(folder, _read_manifest(signature).files))) from None
        if message.startswith("Key mismatch"):
            hint = _bundle_hint(signature)
            raise SignatureError(f"{SIGNATURE_NAME} was signed by key {hint}, not by the given public key {expected_key}") from None
        raise SignatureError(f"{SIGNATURE_NAME} does not verify: {message}") from None
    return _read_manifest(signature)


def _hashing_config() -> Any:
    import model_signing

    return model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME], ignore_git_paths=True)


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    mode = stat.S_IMODE(_stat(path, "private key").st_mode)
    if mode & 0o077:
        raise SigningKeyError(f"{path} is readable by others (mode {mode:04o}): `chmod 600 {path}` first")
    try:
        key = serialization.load_pem_private_key(_read(path, "private key"), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, _CURVES):
        raise SigningKeyError(
            f"{path} is not an EC key on P-256, P-384 or P-521, the only keys model-signing signs with: "
            "create one with `fedledger keys new --signing`"
        )
    return key


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def _stat(path: Path, what: str) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise SigningKeyError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def _public_pem(public: Any) -> bytes:
    return bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _bundle(signature: Path) -> dict[str, Any]:
    try:
        bundle = parse_untrusted_json(signature.read_bytes())
    except (OSError, UntrustedJsonError) as exc:
        raise SignatureError(f"{SIGNATURE_NAME} is not a readable bundle: {exc}") from None
    if not isinstance(bundle, dict):
        raise SignatureError(f"{SIGNATURE_NAME} is not a Sigstore bundle")
    return bundle


def _bundle_hint(signature: Path) -> str:
    hint = _bundle(signature).get("verificationMaterial", {}).get("publicKey", {}).get("hint", "?")
    return str(hint)


def _read_manifest(signature: Path) -> SignedManifest:
    """The signed statement's file digests. Only meaningful once the signature has verified."""
    bundle = _bundle(signature)
    try:
        statement = parse_untrusted_json(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        if statement["predicateType"] != MODEL_SIGNING_PREDICATE:
            raise SignatureError(f"{SIGNATURE_NAME} holds a {statement['predicateType']!r} statement, not model-signing's")
        files = {}
        for resource in statement["predicate"]["resources"]:
            if resource["algorithm"] != "sha256":
                raise SignatureError(f"{resource['name']} is hashed with {resource['algorithm']}, not sha256")
            files[str(resource["name"])] = str(resource["digest"])
    except (KeyError, TypeError, ValueError, UntrustedJsonError) as exc:
        raise SignatureError(f"{SIGNATURE_NAME}'s statement is not model-signing's: {exc}") from None
    return SignedManifest(files=files, key_id=str(bundle.get("verificationMaterial", {}).get("publicKey", {}).get("hint", "")))


def _mismatches(folder: Path, signed: dict[str, str]) -> list[str]:
    actual = {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != SIGNATURE_NAME and not path.relative_to(folder).as_posix().startswith(".git")
    }
    problems = [
        f"{name}: signed with sha256 {digest}, the file has {actual[name]}"
        for name, digest in sorted(signed.items())
        if name in actual and actual[name] != digest
    ]
    problems += [f"{name}: signed but missing" for name in sorted(set(signed) - set(actual))]
    problems += [f"{name}: present but not signed" for name in sorted(set(actual) - set(signed))]
    return problems or ["the files differ from the signed manifest"]
