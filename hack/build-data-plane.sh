#!/usr/bin/env bash
# Builds the third-party operators the real data plane runs (CloudNativePG, its barman-cloud plugin,
# External Secrets Operator) from the Go module proxy at pinned versions, and renders their upstream
# install manifests from the same modules' sources, into a cache outside the repository. Reuses what
# is already built. Prints the output directory on its last line:
#
#   bin/cnpg-manager              CloudNativePG manager (operator, and the instance manager in pods)
#   bin/barman-cloud-manager      plugin-barman-cloud manager (plugin operator and instance sidecar)
#   bin/external-secrets          External Secrets Operator (controller, webhook, certcontroller)
#   manifests/cnpg.yaml                    CloudNativePG config/default, as hack/release.sh renders it
#   manifests/plugin-barman-cloud.yaml     the plugin's kubernetes/ kustomization, as `task manifest`
#                                          renders it, without its cert-manager objects
#   manifests/plugin-barman-cloud.tls.txt  the TLS Secrets and Service the plugin expects instead
#   manifests/external-secrets.yaml        ESO's Helm chart (namespace external-secrets), no CRDs
#   manifests/external-secrets-crds.yaml   the CRDs that chart installs (installCRDs=true)
#   build-times.txt               cold build time of each binary, in seconds
#
# What is changed from upstream, and why: docs/data-plane.md. Versions: CNPG_VERSION,
# BARMAN_PLUGIN_VERSION, ESO_VERSION. Images named in the manifests (all pulled with policy Never):
# CNPG_IMAGE, BARMAN_PLUGIN_IMAGE, BARMAN_SIDECAR_IMAGE, ESO_IMAGE. KUBECTL and HELM, when set, are
# used instead of the ones hack/build-control-plane.sh and hack/install-helm.sh provide.
set -euo pipefail

CNPG_VERSION="${CNPG_VERSION:-v1.30.0}"
BARMAN_PLUGIN_VERSION="${BARMAN_PLUGIN_VERSION:-v0.14.0}"
ESO_VERSION="${ESO_VERSION:-v0.16.2}"
CNPG_IMAGE="${CNPG_IMAGE:-localhost/homelab/cloudnative-pg:${CNPG_VERSION#v}}"
BARMAN_PLUGIN_IMAGE="${BARMAN_PLUGIN_IMAGE:-localhost/homelab/plugin-barman-cloud:${BARMAN_PLUGIN_VERSION#v}}"
BARMAN_SIDECAR_IMAGE="${BARMAN_SIDECAR_IMAGE:-localhost/homelab/plugin-barman-cloud-sidecar:${BARMAN_PLUGIN_VERSION#v}}"
ESO_IMAGE="${ESO_IMAGE:-localhost/homelab/external-secrets:${ESO_VERSION#v}}"
ESO_NAMESPACE=external-secrets
CACHE="${HOMELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homelab-operator}"
ROOT="$CACHE/data-plane"
OUT="$ROOT/cnpg-$CNPG_VERSION-barman-$BARMAN_PLUGIN_VERSION-eso-$ESO_VERSION"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

CNPG_MODULE=github.com/cloudnative-pg/cloudnative-pg
BARMAN_MODULE=github.com/cloudnative-pg/plugin-barman-cloud
ESO_MODULE=github.com/external-secrets/external-secrets

log() { echo "[data-plane] $*" >&2; }
die() { log "$*"; exit 1; }

for image in "$CNPG_IMAGE" "$BARMAN_PLUGIN_IMAGE" "$BARMAN_SIDECAR_IMAGE" "$ESO_IMAGE"; do
  case "${image##*/}" in *:?*) ;; *) die "image $image has no tag" ;; esac
done

# One build at a time, whatever the versions: test processes and make targets may call this together,
# and the machine's cores are shared.
mkdir -p "$ROOT"
exec 7>"$ROOT/.lock"
if ! flock -n 7; then
  log "waiting for another build of the data plane to finish"
  flock 7
fi

# Each artifact has a marker holding the key it was made for (versions, images, and for manifests this
# script's own checksum); an artifact is reused only when its marker holds the current key.
script_sum=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
key_cnpg_bin="$CNPG_MODULE@$CNPG_VERSION"
key_barman_bin="$BARMAN_MODULE@$BARMAN_PLUGIN_VERSION"
key_eso_bin="$ESO_MODULE@$ESO_VERSION"
key_cnpg_yaml="$CNPG_VERSION $CNPG_IMAGE $script_sum"
key_barman_yaml="$BARMAN_PLUGIN_VERSION $BARMAN_PLUGIN_IMAGE $BARMAN_SIDECAR_IMAGE $script_sum"
key_eso_yaml="$ESO_VERSION $ESO_IMAGE $ESO_NAMESPACE $script_sum"

marker() { echo "$OUT/.installed/$1"; }
is_current() { [ -f "$(marker "$1")" ] && [ "$(cat "$(marker "$1")")" = "$2" ]; }
mark() { mkdir -p "$OUT/.installed"; printf '%s\n' "$2" > "$(marker "$1")"; }

all_current() {
  is_current cnpg-manager "$key_cnpg_bin" && [ -x "$OUT/bin/cnpg-manager" ] &&
    is_current barman-cloud-manager "$key_barman_bin" && [ -x "$OUT/bin/barman-cloud-manager" ] &&
    is_current external-secrets "$key_eso_bin" && [ -x "$OUT/bin/external-secrets" ] &&
    is_current cnpg.yaml "$key_cnpg_yaml" && [ -f "$OUT/manifests/cnpg.yaml" ] &&
    is_current plugin-barman-cloud.yaml "$key_barman_yaml" && [ -f "$OUT/manifests/plugin-barman-cloud.yaml" ] &&
    [ -f "$OUT/manifests/plugin-barman-cloud.tls.txt" ] &&
    is_current external-secrets.yaml "$key_eso_yaml" && [ -f "$OUT/manifests/external-secrets.yaml" ] &&
    [ -f "$OUT/manifests/external-secrets-crds.yaml" ]
}
if all_current; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || die "go is not installed"
command -v python3 >/dev/null || die "python3 is required (with PyYAML: apt-get install python3-yaml)"
python3 -c 'import yaml' 2>/dev/null || die "PyYAML is required: apt-get install python3-yaml"
mkdir -p "$OUT/bin" "$OUT/manifests" "$ROOT/src"
rm -rf "$ROOT"/tmp.* # left by a killed run; the lock is held, so no other run uses them
tmp=$(mktemp -d "$ROOT/tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Downloads module@version into the module cache and prints the field (Dir, GoMod, Info) of its
# `go mod download -json` record.
mod_field() {
  local json
  json=$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$1@$2" 2>&1) || true
  if printf '%s' "$json" | grep -q '"Error"' || ! printf '%s' "$json" | grep -q "\"$3\""; then
    die "could not download $1@$2: $(printf '%s' "$json" | sed -n 's/.*"Error": "\(.*\)".*/\1/p')"
  fi
  printf '%s' "$json" | sed -n "s/.*\"$3\": \"\(.*\)\".*/\1/p" | head -1
}

record_time() { # artifact seconds
  touch "$OUT/build-times.txt"
  { grep -v "^$1 " "$OUT/build-times.txt" || true; echo "$1 $2s $(date -u +%Y-%m-%dT%H:%M:%SZ)"; } > "$tmp/times"
  mv "$tmp/times" "$OUT/build-times.txt"
}

# Builds package $pkg of module $module@$version into $out through a wrapper module: a go.mod that
# requires the module at exactly that version, with the module's own go directive and replace
# directives (which only apply in a main module, so `go install pkg@version` would ignore or refuse
# them), and a tools.go importing the package.
build_wrapper() { # name module version pkg out ldflags
  local name=$1 module=$2 version=$3 pkg=$4 out=$5 ldflags=$6 dir gomod go_directive replaces got
  dir="$ROOT/src/$name-$version"
  mkdir -p "$dir"
  gomod=$(mod_field "$module" "$version" GoMod)
  go_directive=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod" | head -1)
  [ -n "$go_directive" ] || die "no go directive in $gomod"
  # Replace directives, from `go mod edit -json`: module replacements are copied; a replacement by a
  # directory of the upstream repository cannot work outside it.
  replaces=$(go mod edit -json "$gomod" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    old = r["Old"]["Path"] + ("@" + r["Old"]["Version"] if r["Old"].get("Version") else "")
    if not r["New"].get("Version"):
        sys.exit("replace %s => %s is a local directory" % (old, r["New"]["Path"]))
    print("%s=%s@%s" % (old, r["New"]["Path"], r["New"]["Version"]))
') || die "cannot copy the replace directives of $module@$version"
  printf 'module homelab.io/data-plane/%s\n\ngo %s\n\nrequire %s %s\n' "$name" "$go_directive" "$module" "$version" > "$dir/go.mod"
  rm -f "$dir/go.sum"
  local r
  for r in $replaces; do
    log "  replace ${r%%=*} => ${r#*=} (from $module's go.mod)"
    (cd "$dir" && go mod edit -replace="$r")
  done
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" > "$dir/tools.go"
  # -e: tidy reports that the imported package is a program; the requirements it records are right.
  (cd "$dir" && GOFLAGS=-mod=mod go mod tidy -e > "$dir/tidy.log" 2>&1) || true
  got=$(cd "$dir" && GOFLAGS=-mod=mod go list -m -f '{{.Version}}' "$module" 2>>"$dir/tidy.log") ||
    die "wrapper module for $module@$version is broken; see $dir/tidy.log"
  [ "$got" = "$version" ] || die "wrapper module selected $module $got, not $version"
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
}

# ---- tools for the manifests (only looked up when a manifest must be rendered) ----
kubectl_bin() {
  if [ -z "${KUBECTL:-}" ]; then
    local cp
    cp=$(bash "$HERE/build-control-plane.sh" | tail -1)
    KUBECTL="$cp/kubectl"
  fi
  [ -x "$KUBECTL" ] || die "no kubectl at $KUBECTL (set KUBECTL)"
  echo "$KUBECTL"
}
helm_bin() {
  [ -n "${HELM:-}" ] || HELM=$(bash "$HERE/install-helm.sh" | tail -1)
  [ -x "$HELM" ] || die "no helm at $HELM (set HELM)"
  echo "$HELM"
}

# The YAML transforms, in Python with PyYAML. Input is read twice, with YAML 1.1 rules (PyYAML's) and
# YAML 1.2 core rules, and refused if the two readings differ, so that writing it back changes
# nothing but what is changed on purpose.
transform() { python3 - "$@" <<'PY'
import base64, re, sys, yaml

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

class Core12(SafeLoader):
    pass
Core12.yaml_implicit_resolvers = {}
for tag, rx, first in [
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^(?:<<)$", "<"),
]:
    Core12.add_implicit_resolver("tag:yaml.org,2002:" + tag, re.compile(rx), list(first))

def load(path):
    text = open(path).read()
    docs = [d for d in yaml.load_all(text, Loader=SafeLoader) if d is not None]
    docs12 = [d for d in yaml.load_all(text, Loader=Core12) if d is not None]
    if docs != docs12:
        sys.exit("%s: a scalar reads differently in YAML 1.1 and 1.2; refusing to rewrite it" % path)
    return docs

def str_presenter(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)
SafeDumper.add_representer(str, str_presenter)

def dump(docs, path, header):
    with open(path, "w") as f:
        f.write(header)
        f.write(yaml.dump_all(docs, Dumper=SafeDumper, sort_keys=False, default_flow_style=False,
                              width=1 << 20, explicit_start=True))

def containers(doc):
    """Every container of a workload object (Deployment, Job, ...), with its kind of list."""
    found = []
    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("containers", "initContainers", "ephemeralContainers") and isinstance(v, list):
                    found.extend(c for c in v if isinstance(c, dict) and "image" in c)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    if doc.get("kind") != "CustomResourceDefinition":
        walk(doc.get("spec"))
    return found

def pin(docs, images):
    """Pull policy Never on every container; every image must be one of ours."""
    n = 0
    for d in docs:
        for c in containers(d):
            if c["image"] not in images:
                sys.exit("%s/%s: container %s has image %s, not one of %s"
                         % (d["kind"], d["metadata"]["name"], c["name"], c["image"], images))
            c["imagePullPolicy"] = "Never"
            n += 1
    if n == 0:
        sys.exit("no containers found")

def env_value(container, name):
    for e in container.get("env") or []:
        if e["name"] == name:
            return e
    return None

def name_of(d):
    return "%s/%s" % (d["kind"], d["metadata"]["name"])

cmd, args = sys.argv[1], sys.argv[2:]

if cmd == "cnpg":
    src, out, image, version = args
    docs = load(src)
    pin(docs, [image])
    deps = [d for d in docs if d["kind"] == "Deployment"]
    if len(deps) != 1:
        sys.exit("expected one Deployment, got %s" % [name_of(d) for d in deps])
    manager = deps[0]["spec"]["template"]["spec"]["containers"][0]
    e = env_value(manager, "OPERATOR_IMAGE_NAME")
    if e is None:
        sys.exit("the manager has no OPERATOR_IMAGE_NAME")
    e.pop("valueFrom", None)
    e["value"] = image
    dump(docs, out, "# CloudNativePG %s: config/default rendered as its hack/release.sh does, with the\n"
         "# image %s, pull policy Never. See docs/data-plane.md.\n" % (version, image))

elif cmd == "barman":
    src, out, tls_out, plugin_image, sidecar_image, version = args
    docs = load(src)
    certs = [d for d in docs if d["apiVersion"].startswith("cert-manager.io/")]
    docs = [d for d in docs if not d["apiVersion"].startswith("cert-manager.io/")]
    for d in docs:
        if "cert-manager.io" in yaml.dump(d.get("metadata", {})):
            sys.exit("%s still refers to cert-manager" % name_of(d))
    pin(docs, [plugin_image])
    svcs = [d for d in docs if d["kind"] == "Service" and "cnpg.io/pluginName" in (d["metadata"].get("labels") or {})]
    if len(svcs) != 1:
        sys.exit("expected one Service labelled cnpg.io/pluginName, got %d" % len(svcs))
    svc = svcs[0]
    ann = svc["metadata"]["annotations"]
    ns = svc["metadata"]["namespace"]
    server_secret, client_secret = ann["cnpg.io/pluginServerSecret"], ann["cnpg.io/pluginClientSecret"]
    # What the plugin reads from each Secret: its --*-cert/--*-key arguments name files in mounted volumes.
    deps = [d for d in docs if d["kind"] == "Deployment"]
    if len(deps) != 1:
        sys.exit("expected one Deployment, got %s" % [name_of(d) for d in deps])
    pod = deps[0]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    vol_secret = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    mount_secret = {m["mountPath"].rstrip("/"): vol_secret.get(m["name"]) for m in c.get("volumeMounts", [])}
    reads = {}
    for a in c.get("args", []):
        m = re.match(r"^--((?:server|client)-(?:cert|key))=(.*)/([^/]+)$", a)
        if m:
            reads.setdefault(mount_secret.get(m.group(2)), []).append("%s (--%s)" % (m.group(3), m.group(1)))
    e = env_value(c, "SIDECAR_IMAGE")
    ref = e and e.get("valueFrom", {}).get("secretKeyRef")
    if not ref:
        sys.exit("the plugin's SIDECAR_IMAGE does not come from a Secret")
    sec = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == ref["name"]]
    got = base64.b64decode(sec[0]["data"][ref["key"]]).decode().strip() if sec else None
    if got != sidecar_image:
        sys.exit("SIDECAR_IMAGE is %r, not %r" % (got, sidecar_image))
    by_secret = {cert["spec"]["secretName"]: cert for cert in certs if cert["kind"] == "Certificate"}
    for s in (server_secret, client_secret):
        if s not in by_secret:
            sys.exit("no upstream Certificate for the Secret %s" % s)
    server, client = by_secret[server_secret]["spec"], by_secret[client_secret]["spec"]
    port = ann["cnpg.io/pluginPort"]
    server_name = ann.get("cnpg.io/pluginServerName", svc["metadata"]["name"])
    lines = [
        "# plugin-barman-cloud %s: the TLS material its manifest expects. Upstream makes it with" % version,
        "# cert-manager (removed: %s); the test environment creates these Secrets instead."
        % ", ".join(name_of(x) for x in certs),
        "namespace=%s" % ns,
        "service=%s" % svc["metadata"]["name"],
        "service-label=cnpg.io/pluginName=%s" % svc["metadata"]["labels"]["cnpg.io/pluginName"],
    ] + ["service-annotation=%s=%s" % kv for kv in sorted(ann.items())] + [
        "server-secret=%s" % server_secret,
        "server-secret-type=kubernetes.io/tls",
        "server-secret-keys=tls.crt,tls.key",
        "server-secret-read-by-plugin=%s" % ", ".join(reads.get(server_secret, [])),
        "server-secret-read-by-cnpg=tls.crt (the only roots CNPG trusts for the plugin's server certificate)",
        "server-common-name=%s" % server.get("commonName", ""),
        "server-dns-names=%s" % ",".join(server.get("dnsNames", [])),
        "server-usages=%s" % ",".join(server.get("usages", [])),
        "client-secret=%s" % client_secret,
        "client-secret-type=kubernetes.io/tls",
        "client-secret-keys=tls.crt,tls.key",
        "client-secret-read-by-plugin=%s" % ", ".join(reads.get(client_secret, [])),
        "client-secret-read-by-cnpg=tls.crt,tls.key (its client certificate)",
        "client-common-name=%s" % client.get("commonName", ""),
        "client-usages=%s" % ",".join(client.get("usages", [])),
        "upstream-issuer=%s" % ",".join(sorted({"%s/%s" % (x["kind"], x["metadata"]["name"]) for x in certs if x["kind"] != "Certificate"})),
        "upstream-certificates-self-signed=true",
        "ca.crt=read by neither side (cert-manager writes it; CNPG and the plugin use tls.crt as the roots)",
        "cnpg-dials=%s.%s.svc:%s" % (svc["metadata"]["name"], ns, port),
        "cnpg-tls-server-name=%s" % server_name,
    ]
    open(tls_out, "w").write("\n".join(lines) + "\n")
    dump(docs, out, "# plugin-barman-cloud %s: kubernetes/ rendered as its `task manifest` does, with the\n"
         "# images %s and %s, pull policy Never, and without cert-manager objects\n"
         "# (TLS: plugin-barman-cloud.tls.txt). See docs/data-plane.md.\n" % (version, plugin_image, sidecar_image))

elif cmd == "eso-crd-templates":
    # hack/helm.generate.sh of External Secrets (yq and sed) in Python: one template per CRD of
    # deploy/crds/bundle.yaml in the chart's templates/crds, each behind the chart's install flags.
    bundle, crd_dir = args
    for d in load(bundle):
        if d.get("kind") != "CustomResourceDefinition":
            sys.exit("bundle.yaml holds a %s" % d.get("kind"))
        kind, singular = d["spec"]["names"]["kind"], d["spec"]["names"]["singular"]
        flag = "create" + kind
        if ("ExternalSecret" in flag or "SecretStore" in flag) and any(v["name"] == "v1alpha1" for v in d["spec"]["versions"]):
            sys.exit("%s has v1alpha1, which helm.generate.sh puts behind crds.conversion.enabled; not ported" % kind)
        if "Cluster" in flag or "PushSecret" in flag:
            head = "{{- if and (.Values.installCRDs) (.Values.crds.%s) }}\n" % flag
        else:
            head = "{{- if .Values.installCRDs }}\n"
        body = yaml.dump(d, Dumper=SafeDumper, sort_keys=False, default_flow_style=False, width=1 << 20)
        if "{{" in body:
            sys.exit("%s: CRD text holds '{{', which Helm would read as a template" % kind)
        body = body.replace("name: kubernetes", 'name: {{ include "external-secrets.fullname" . }}-webhook')
        body = body.replace("namespace: default", "namespace: {{ .Release.Namespace | quote }}")
        lines = body.split("\n")
        at = next(i for i, l in enumerate(lines) if "annotations" in l)
        if lines[at] != "  annotations:":
            sys.exit("%s: first 'annotations' is not metadata's: %r" % (kind, lines[at]))
        lines[at + 1:at + 1] = [
            "    {{- with .Values.crds.annotations }}",
            "    {{- toYaml . | nindent 4}}",
            "    {{- end }}",
            "    {{- if and .Values.crds.conversion.enabled .Values.webhook.certManager.enabled .Values.webhook.certManager.addInjectorAnnotations }}",
            '    cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "external-secrets.fullname" . }}-webhook',
            "    {{- end }}",
        ]
        open("%s/%s.yaml" % (crd_dir, singular), "w").write(head + "\n".join(lines).rstrip("\n") + "\n{{- end }}\n")

elif cmd == "eso-chart":
    # The release workflow stamps the chart with the release version before rendering it; the optional
    # bitwarden-sdk-server subchart (off by default) is fetched from an OCI registry, so it is dropped.
    chart_yaml, version = args
    c = yaml.load(open(chart_yaml), Loader=SafeLoader)
    c["version"] = version
    c["appVersion"] = version
    deps = c.pop("dependencies", []) or []
    for dep in deps:
        print("dropped-dependency %s %s (condition %s)" % (dep["name"], dep.get("version"), dep.get("condition")))
    yaml.dump(c, open(chart_yaml, "w"), Dumper=SafeDumper, sort_keys=False, default_flow_style=False)

elif cmd == "eso-values":
    out, image, version = args
    repo, _, tag = image.rpartition(":")
    if not repo or "/" in tag:
        sys.exit("ESO_IMAGE %s has no tag" % image)
    img = {"repository": repo, "tag": tag, "pullPolicy": "Never"}
    yaml.dump({"installCRDs": True, "image": img, "webhook": {"image": img}, "certController": {"image": img}},
              open(out, "w"), Dumper=SafeDumper, sort_keys=False, default_flow_style=False)

elif cmd == "eso":
    src, out, crds_out, image, namespace, version = args
    docs = load(src)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    if not crds:
        sys.exit("the chart rendered no CRDs")
    pin(rest, [image])
    for d in rest:
        if "cert-manager.io" in yaml.dump(d):
            sys.exit("%s refers to cert-manager" % name_of(d))
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    dump([ns] + rest, out, "# External Secrets Operator %s: its Helm chart deploy/charts/external-secrets,\n"
         "# `helm template external-secrets -n %s`, image %s with pull policy Never, CRDs in\n"
         "# external-secrets-crds.yaml, and the Namespace `helm install --create-namespace` would make.\n"
         "# See docs/data-plane.md.\n" % (version, namespace, image))
    dump(crds, crds_out, "# External Secrets Operator %s: the CRDs its Helm chart installs (installCRDs=true).\n" % version)

else:
    sys.exit("unknown transform " + cmd)
PY
}

# ---- manifests ----
if ! is_current cnpg.yaml "$key_cnpg_yaml" || [ ! -f "$OUT/manifests/cnpg.yaml" ]; then
  log "rendering CloudNativePG $CNPG_VERSION config/default (image $CNPG_IMAGE)"
  kubectl=$(kubectl_bin)
  src=$(mod_field "$CNPG_MODULE" "$CNPG_VERSION" Dir)
  # As CloudNativePG's hack/release.sh: a copy of config/, the manager's image set (what `kustomize
  # edit set image controller=...` writes), config/default built. The module cache is read-only.
  mkdir -p "$tmp/cnpg"
  cp -r "$src/config/." "$tmp/cnpg/"
  chmod -R u+w "$tmp/cnpg"
  ! grep -q '^images:' "$tmp/cnpg/manager/kustomization.yaml" ||
    die "config/manager/kustomization.yaml of $CNPG_VERSION already sets images"
  printf "\nimages:\n- name: controller\n  newName: '%s'\n  newTag: '%s'\n" "${CNPG_IMAGE%:*}" "${CNPG_IMAGE##*:}" \
    >> "$tmp/cnpg/manager/kustomization.yaml"
  "$kubectl" kustomize "$tmp/cnpg/default" > "$tmp/cnpg.yaml"
  transform cnpg "$tmp/cnpg.yaml" "$tmp/cnpg.out.yaml" "$CNPG_IMAGE" "$CNPG_VERSION"
  mv "$tmp/cnpg.out.yaml" "$OUT/manifests/cnpg.yaml"
  mark cnpg.yaml "$key_cnpg_yaml"
fi

if ! is_current plugin-barman-cloud.yaml "$key_barman_yaml" || [ ! -f "$OUT/manifests/plugin-barman-cloud.yaml" ] ||
  [ ! -f "$OUT/manifests/plugin-barman-cloud.tls.txt" ]; then
  log "rendering plugin-barman-cloud $BARMAN_PLUGIN_VERSION kubernetes/ (images $BARMAN_PLUGIN_IMAGE, $BARMAN_SIDECAR_IMAGE)"
  kubectl=$(kubectl_bin)
  src=$(mod_field "$BARMAN_MODULE" "$BARMAN_PLUGIN_VERSION" Dir)
  # As the plugin's `task manifest` (Taskfile.yml): in kubernetes/, `kustomize edit set image
  # plugin-barman-cloud=...` and `kustomize edit set secret plugin-barman-cloud
  # --from-literal SIDECAR_IMAGE=...`, then `kustomize build kubernetes`.
  mkdir -p "$tmp/barman"
  cp -r "$src/config" "$src/kubernetes" "$tmp/barman/"
  chmod -R u+w "$tmp/barman"
  python3 - "$tmp/barman/kubernetes/kustomization.yaml" "$BARMAN_PLUGIN_IMAGE" "$BARMAN_SIDECAR_IMAGE" <<'PY'
import sys, yaml
path, plugin, sidecar = sys.argv[1:]
k = yaml.safe_load(open(path))
imgs = [i for i in k.get("images", []) if i["name"] == "plugin-barman-cloud"]
gens = [g for g in k.get("secretGenerator", []) if g["name"] == "plugin-barman-cloud"]
if len(imgs) != 1 or len(gens) != 1:
    sys.exit("kubernetes/kustomization.yaml: no image or secretGenerator plugin-barman-cloud to set")
imgs[0]["newName"], imgs[0]["newTag"] = plugin.rsplit(":", 1)
gens[0]["literals"] = [l for l in gens[0].get("literals", []) if not l.startswith("SIDECAR_IMAGE=")] + ["SIDECAR_IMAGE=" + sidecar]
yaml.safe_dump(k, open(path, "w"), sort_keys=False)
PY
  "$kubectl" kustomize "$tmp/barman/kubernetes" > "$tmp/barman.yaml"
  transform barman "$tmp/barman.yaml" "$tmp/barman.out.yaml" "$tmp/barman.tls.txt" \
    "$BARMAN_PLUGIN_IMAGE" "$BARMAN_SIDECAR_IMAGE" "$BARMAN_PLUGIN_VERSION"
  mv "$tmp/barman.tls.txt" "$OUT/manifests/plugin-barman-cloud.tls.txt"
  mv "$tmp/barman.out.yaml" "$OUT/manifests/plugin-barman-cloud.yaml"
  mark plugin-barman-cloud.yaml "$key_barman_yaml"
fi

if ! is_current external-secrets.yaml "$key_eso_yaml" || [ ! -f "$OUT/manifests/external-secrets.yaml" ] ||
  [ ! -f "$OUT/manifests/external-secrets-crds.yaml" ]; then
  log "rendering External Secrets Operator $ESO_VERSION Helm chart (image $ESO_IMAGE, namespace $ESO_NAMESPACE)"
  helm=$(helm_bin)
  src=$(mod_field "$ESO_MODULE" "$ESO_VERSION" Dir)
  [ -f "$src/deploy/charts/external-secrets/Chart.yaml" ] || die "$ESO_MODULE@$ESO_VERSION has no deploy/charts/external-secrets"
  [ -f "$src/deploy/crds/bundle.yaml" ] || die "$ESO_MODULE@$ESO_VERSION has no deploy/crds/bundle.yaml"
  # The chart in the repository has no CRD templates: `make helm.generate` (hack/helm.generate.sh)
  # writes them from deploy/crds/bundle.yaml when the chart is packaged. Done here the same way.
  mkdir -p "$tmp/eso"
  cp -r "$src/deploy/charts/external-secrets" "$tmp/eso/"
  chmod -R u+w "$tmp/eso"
  chart="$tmp/eso/external-secrets"
  transform eso-crd-templates "$src/deploy/crds/bundle.yaml" "$chart/templates/crds"
  transform eso-chart "$chart/Chart.yaml" "$ESO_VERSION" | while read -r line; do log "  chart: $line"; done
  rm -f "$chart/Chart.lock"
  transform eso-values "$tmp/eso/values.yaml" "$ESO_IMAGE" "$ESO_VERSION"
  "$helm" template external-secrets "$chart" --namespace "$ESO_NAMESPACE" -f "$tmp/eso/values.yaml" > "$tmp/eso.yaml"
  transform eso "$tmp/eso.yaml" "$tmp/eso.out.yaml" "$tmp/eso-crds.out.yaml" "$ESO_IMAGE" "$ESO_NAMESPACE" "$ESO_VERSION"
  mv "$tmp/eso-crds.out.yaml" "$OUT/manifests/external-secrets-crds.yaml"
  mv "$tmp/eso.out.yaml" "$OUT/manifests/external-secrets.yaml"
  mark external-secrets.yaml "$key_eso_yaml"
fi

# ---- binaries, one build at a time ----
if ! is_current cnpg-manager "$key_cnpg_bin" || [ ! -x "$OUT/bin/cnpg-manager" ]; then
  log "building CloudNativePG $CNPG_VERSION manager (wrapper module; \`go install\` is refused for this module)"
  start=$(date +%s)
  # Version stamps as CloudNativePG's Makefile and .goreleaser.yml set them: the version without its
  # "v", the short commit and the commit date, here from the module proxy's record of the tag.
  info=$(mod_field "$CNPG_MODULE" "$CNPG_VERSION" Info)
  commit=$(python3 -c 'import json,sys; print(((json.load(open(sys.argv[1])).get("Origin") or {}).get("Hash") or "unknown")[:7])' "$info")
  date=$(python3 -c 'import json,sys; print((json.load(open(sys.argv[1])).get("Time") or "unknown")[:10])' "$info")
  v=github.com/cloudnative-pg/cloudnative-pg/pkg/versions
  build_wrapper cnpg "$CNPG_MODULE" "$CNPG_VERSION" "$CNPG_MODULE/cmd/manager" "$OUT/bin/cnpg-manager" \
    "-s -w -X $v.buildVersion=${CNPG_VERSION#v} -X $v.buildCommit=$commit -X $v.buildDate=$date"
  "$OUT/bin/cnpg-manager" version >/dev/null 2>&1 || die "the built cnpg-manager does not run"
  took=$(( $(date +%s) - start ))
  record_time cnpg-manager "$took"
  log "built cnpg-manager in ${took}s"
  mark cnpg-manager "$key_cnpg_bin"
fi

if ! is_current barman-cloud-manager "$key_barman_bin" || [ ! -x "$OUT/bin/barman-cloud-manager" ]; then
  log "building plugin-barman-cloud $BARMAN_PLUGIN_VERSION manager (go install)"
  start=$(date +%s)
  mkdir -p "$tmp/gobin"
  GOBIN="$tmp/gobin" CGO_ENABLED=0 GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" \
    "$BARMAN_MODULE/cmd/manager@$BARMAN_PLUGIN_VERSION"
  mv "$tmp/gobin/manager" "$OUT/bin/barman-cloud-manager"
  "$OUT/bin/barman-cloud-manager" --help >/dev/null 2>&1 || die "the built barman-cloud-manager does not run"
  took=$(( $(date +%s) - start ))
  record_time barman-cloud-manager "$took"
  log "built barman-cloud-manager in ${took}s"
  mark barman-cloud-manager "$key_barman_bin"
fi

if ! is_current external-secrets "$key_eso_bin" || [ ! -x "$OUT/bin/external-secrets" ]; then
  log "building External Secrets Operator $ESO_VERSION (wrapper module with its replace directives; ~10 min)"
  start=$(date +%s)
  build_wrapper eso "$ESO_MODULE" "$ESO_VERSION" "$ESO_MODULE" "$OUT/bin/external-secrets" "-s -w"
  "$OUT/bin/external-secrets" --help >/dev/null 2>&1 || die "the built external-secrets does not run"
  took=$(( $(date +%s) - start ))
  record_time external-secrets "$took"
  log "built external-secrets in ${took}s"
  mark external-secrets "$key_eso_bin"
fi

all_current || die "incomplete: $OUT"
log "done: $OUT"
echo "$OUT"
