#!/usr/bin/env python3
"""Writes and checks single-layer OCI image-layout archives (helper of hack/build-images.sh).

  oci-image.py build --rootfs DIR --name REF --out FILE [--user U] [--env K=V]... [--entrypoint JSON]
                     [--cmd JSON] [--workdir DIR] [--label K=V]... [--expose PORT/PROTO]...
      Packs DIR as one gzip'd layer (GNU tar, sorted, numeric owners, mtime 0; pigz or gzip -1) and
      writes an OCI image layout as an uncompressed tar: oci-layout, index.json (annotated with
      io.containerd.image.name = REF and org.opencontainers.image.ref.name = its tag), blobs/sha256/.
      Prints the archive's sha256.
  oci-image.py check FILE [--ref REF] [--user U] [--expect PATH]... [--forbid PATH]...
      Checks the layout: every blob's digest and size, index -> manifest -> config/layers, the layer's
      diff_id, platform and annotations; the paths that must (or must not) be in the layer. Prints a
      one-line JSON summary.
  oci-image.py elf FILE
      Prints "static" or "dynamic NEEDED..." for an x86-64 ELF executable.
"""
import argparse
import gzip
import hashlib
import io
import json
import mmap
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
EPOCH = "1970-01-01T00:00:00Z"
CHUNK = 1 << 20


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def split_ref(ref):
    """localhost/homelab/x:1.0 -> tag 1.0 (a ':' after the last '/')."""
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        raise SystemExit(f"image reference {ref!r} has no tag")
    return last.rsplit(":", 1)[1]


def put_blob(blobs, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return digest, len(data)


def pack_layer(rootfs, blobs, level):
    """tar | (sha256 of the stream) | pigz -> blob. Returns (diff_id, digest, size, tar_size)."""
    compressor = shutil.which("pigz") or shutil.which("gzip")
    if not compressor:
        raise SystemExit("neither pigz nor gzip is installed")
    tmp = os.path.join(blobs, ".layer.tmp")
    tar = subprocess.Popen(
        ["tar", "--sort=name", "--numeric-owner", "--mtime=@0", "--format=gnu", "-C", rootfs, "-cf", "-", "."],
        stdout=subprocess.PIPE,
    )
    with open(tmp, "wb") as out:
        gz = subprocess.Popen([compressor, f"-{level}", "-n", "-c"], stdin=subprocess.PIPE, stdout=out)
        h = hashlib.sha256()
        n = 0
        while True:
            b = tar.stdout.read(CHUNK)
            if not b:
                break
            h.update(b)
            n += len(b)
            gz.stdin.write(b)
        gz.stdin.close()
        if tar.wait() != 0:
            raise SystemExit(f"tar of {rootfs} failed")
        if gz.wait() != 0:
            raise SystemExit(f"{compressor} failed")
    digest = sha256_file(tmp)
    os.rename(tmp, os.path.join(blobs, digest))
    return h.hexdigest(), digest, os.path.getsize(os.path.join(blobs, digest)), n


def kv(items):
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        out[k] = v
    return out


def cmd_build(a):
    tag = split_ref(a.name)
    stage = tempfile.mkdtemp(prefix=".oci-", dir=os.path.dirname(os.path.abspath(a.out)))
    try:
        blobs = os.path.join(stage, "blobs", "sha256")
        os.makedirs(blobs)
        diff_id, layer_digest, layer_size, tar_size = pack_layer(a.rootfs, blobs, a.level)
        cfg = {}
        if a.user:
            cfg["User"] = a.user
        cfg["Env"] = a.env or []
        if a.entrypoint:
            cfg["Entrypoint"] = json.loads(a.entrypoint)
        if a.cmd:
            cfg["Cmd"] = json.loads(a.cmd)
        if a.workdir:
            cfg["WorkingDir"] = a.workdir
        if a.label:
            cfg["Labels"] = kv(a.label)
        if a.expose:
            cfg["ExposedPorts"] = {p: {} for p in a.expose}
        config = {
            "created": EPOCH,
            "architecture": "amd64",
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]},
            "history": [{"created": EPOCH, "created_by": a.created_by or "hack/build-images.sh"}],
        }
        config_digest, config_size = put_blob(blobs, canonical(config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": "sha256:" + config_digest, "size": config_size},
            "layers": [{"mediaType": MT_LAYER, "digest": "sha256:" + layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = put_blob(blobs, canonical(manifest))
        index = {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [
                {
                    "mediaType": MT_MANIFEST,
                    "digest": "sha256:" + manifest_digest,
                    "size": manifest_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": a.name,
                        "org.opencontainers.image.ref.name": tag,
                    },
                }
            ],
        }
        with open(os.path.join(stage, "index.json"), "wb") as f:
            f.write(canonical(index))
        with open(os.path.join(stage, "oci-layout"), "wb") as f:
            f.write(canonical({"imageLayoutVersion": "1.0.0"}))
        tmp_out = a.out + ".tmp"
        subprocess.run(
            ["tar", "--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "--format=gnu",
             "-C", stage, "-cf", tmp_out, "oci-layout", "index.json", "blobs"],
            check=True,
        )
        os.rename(tmp_out, a.out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(sha256_file(a.out))


class HashingReader(io.RawIOBase):
    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def readable(self):
        return True

    def readinto(self, b):
        data = self.f.read(len(b))
        self.h.update(data)
        self.n += len(data)
        b[: len(data)] = data
        return len(data)


def fail(msg):
    raise SystemExit(f"check failed: {msg}")


def norm(name):
    name = name[2:] if name.startswith("./") else name
    return "/" + name.strip("/") if name not in (".", "./", "") else "/"


def cmd_check(a):
    with tarfile.open(a.archive, "r:") as t:
        members = {(m.name[2:] if m.name.startswith("./") else m.name): m for m in t.getmembers()}

        def read(name):
            m = members.get(name)
            if m is None or not m.isfile():
                fail(f"{name} missing from the archive")
            return t.extractfile(m).read()

        layout = json.loads(read("oci-layout"))
        if layout.get("imageLayoutVersion") != "1.0.0":
            fail(f"oci-layout: {layout}")
        index = json.loads(read("index.json"))
        if index.get("schemaVersion") != 2 or len(index.get("manifests", [])) != 1:
            fail("index.json must list exactly one manifest")
        blob_names = [n for n in members if n.startswith("blobs/sha256/") and members[n].isfile()]

        def blob(desc, media_type):
            if desc.get("mediaType") != media_type:
                fail(f"{desc.get('digest')}: media type {desc.get('mediaType')}, want {media_type}")
            digest = desc["digest"]
            if not digest.startswith("sha256:"):
                fail(f"digest {digest}")
            name = "blobs/sha256/" + digest[7:]
            m = members.get(name)
            if m is None:
                fail(f"blob {digest} missing")
            if m.size != desc["size"]:
                fail(f"blob {digest}: size {m.size}, descriptor says {desc['size']}")
            return name, m

        for name in blob_names:
            h = hashlib.sha256()
            f = t.extractfile(members[name])
            while True:
                b = f.read(CHUNK)
                if not b:
                    break
                h.update(b)
            if h.hexdigest() != name.rsplit("/", 1)[1]:
                fail(f"{name}: content digest is sha256:{h.hexdigest()}")

        desc = index["manifests"][0]
        ann = desc.get("annotations", {})
        ref = ann.get("io.containerd.image.name")
        if not ref or ann.get("org.opencontainers.image.ref.name") != split_ref(ref):
            fail(f"index annotations {ann}")
        if a.ref and ref != a.ref:
            fail(f"image name {ref}, want {a.ref}")
        if desc.get("platform") != {"architecture": "amd64", "os": "linux"}:
            fail(f"platform {desc.get('platform')}")
        mname, _ = blob(desc, MT_MANIFEST)
        manifest = json.loads(read(mname))
        cname, _ = blob(manifest["config"], MT_CONFIG)
        config = json.loads(read(cname))
        if config.get("architecture") != "amd64" or config.get("os") != "linux":
            fail("config platform")
        cfg = config.get("config", {})
        if not any(e.startswith("PATH=") for e in cfg.get("Env", [])):
            fail("config Env has no PATH")
        if a.user is not None and cfg.get("User") != a.user:
            fail(f"User {cfg.get('User')!r}, want {a.user!r}")
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(manifest["layers"]):
            fail("diff_ids and layers differ in number")
        paths = {}
        tar_size = 0
        for ldesc, diff_id in zip(manifest["layers"], diff_ids):
            lname, lm = blob(ldesc, MT_LAYER)
            reader = HashingReader(gzip.GzipFile(fileobj=t.extractfile(lm)))
            with tarfile.open(fileobj=io.BufferedReader(reader, CHUNK), mode="r|") as lt:
                for m in lt:
                    if m.name.startswith("/") or ".." in m.name.split("/"):
                        fail(f"layer entry {m.name!r} escapes the root")
                    paths[norm(m.name)] = m
            while reader.readinto(bytearray(CHUNK)):
                pass
            if "sha256:" + reader.h.hexdigest() != diff_id:
                fail(f"layer {ldesc['digest']}: uncompressed digest sha256:{reader.h.hexdigest()}, diff_id {diff_id}")
            tar_size += reader.n
    for p in a.expect or []:
        target = None
        if "=" in p:
            p, target = p.split("=", 1)
        m = paths.get(p)
        if m is None:
            fail(f"{p} is not in the image")
        if target is not None and (not m.issym() or m.linkname != target):
            fail(f"{p} should be a symlink to {target}")
    for p in a.forbid or []:
        if p in paths:
            fail(f"{p} must not be in the image")
    bindirs = ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/busybox")
    shells = sorted(p for p, m in paths.items()
                    if os.path.dirname(p) in bindirs and os.path.basename(p) in ("sh", "bash", "dash", "ash", "busybox"))
    summary = {
        "ref": ref,
        "archive_bytes": os.path.getsize(a.archive),
        "layer_tar_bytes": tar_size,
        "entries": len(paths),
        "user": cfg.get("User"),
        "entrypoint": cfg.get("Entrypoint"),
        "cmd": cfg.get("Cmd"),
        "workdir": cfg.get("WorkingDir"),
        "shells": shells,
    }
    print(json.dumps(summary))


def cmd_elf(a):
    with open(a.file, "rb") as f:
        if os.fstat(f.fileno()).st_size < 64:
            raise SystemExit(f"{a.file}: not an ELF file")
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit(f"{a.file}: not a 64-bit little-endian ELF file")
    e_machine = struct.unpack_from("<H", data, 18)[0]
    if e_machine != 62:
        raise SystemExit(f"{a.file}: not an x86-64 binary (e_machine {e_machine})")
    e_phoff, = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    loads, dynamic, interp = [], None, False
    for i in range(e_phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:
            dynamic = (p_offset, p_filesz)
        elif p_type == 3:
            interp = True
    if not interp and dynamic is None:
        print("static")
        return
    needed, strtab = [], None
    if dynamic:
        off, size = dynamic
        for j in range(0, size, 16):
            tag, val = struct.unpack_from("<qQ", data, off + j)
            if tag == 0:
                break
            if tag == 1:
                needed.append(val)
            elif tag == 5:
                strtab = val
    names = []
    if strtab is not None:
        for vaddr, offset, filesz in loads:
            if vaddr <= strtab < vaddr + filesz:
                base = strtab - vaddr + offset
                break
        else:
            base = None
        if base is not None:
            for n in needed:
                end = data.find(b"\0", base + n)
                names.append(data[base + n:end].decode())
    if not interp:
        # static-pie: a dynamic section but no interpreter and no libraries.
        if not names:
            print("static")
            return
    print(" ".join(["dynamic"] + names))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--rootfs", required=True)
    b.add_argument("--name", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--user")
    b.add_argument("--env", action="append")
    b.add_argument("--entrypoint")
    b.add_argument("--cmd")
    b.add_argument("--workdir")
    b.add_argument("--label", action="append")
    b.add_argument("--expose", action="append")
    b.add_argument("--created-by")
    b.add_argument("--level", type=int, default=1)
    c = sub.add_parser("check")
    c.add_argument("archive")
    c.add_argument("--ref")
    c.add_argument("--user")
    c.add_argument("--expect", action="append", help="PATH or PATH=SYMLINK_TARGET")
    c.add_argument("--forbid", action="append")
    e = sub.add_parser("elf")
    e.add_argument("file")
    a = p.parse_args()
    {"build": cmd_build, "check": cmd_check, "elf": cmd_elf}[a.command](a)


if __name__ == "__main__":
    main()
