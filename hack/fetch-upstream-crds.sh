#!/usr/bin/env bash
# Downloads the pinned upstream CRDs that the tests install (the same files as
# ../shared/upstream-crds, at the versions in its README) from the upstream repositories, for a
# machine without ../shared. Then point the tests at them:
#
#   hack/fetch-upstream-crds.sh            # into $HOMELAB_CACHE/upstream-crds
#   export HOMELAB_UPSTREAM_CRDS="$HOME/.cache/homelab-operator/upstream-crds"
#
# Each file is checked against the SHA-256 of the copy the tests were written against; a
# difference is reported (the tests may then fail on changed schemas).
set -euo pipefail

CACHE="${HOMELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homelab-operator}"
DIR="${1:-$CACHE/upstream-crds}"
RAW="https://raw.githubusercontent.com"
mkdir -p "$DIR"
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

differ=0
# file, upstream repository, tag, path in the repository (a trailing / means "directory of file")
while read -r file repo tag path sha; do
  case "$path" in
    */) url="$RAW/$repo/$tag/$path$file" ;;
    *) url="$RAW/$repo/$tag/$path" ;;
  esac
  echo "fetching $file ($repo $tag)" >&2
  curl -fsSL --retry 3 "$url" -o "$DIR/$file.part"
  mv "$DIR/$file.part" "$DIR/$file"
  if [ "$(sha256sum "$DIR/$file" | cut -d' ' -f1)" != "$sha" ]; then
    echo "warning: $file differs from the pinned copy (sha256 $sha)" >&2
    differ=1
  fi
done <<'LIST'
postgresql.cnpg.io_clusters.yaml cloudnative-pg/cloudnative-pg v1.30.0 config/crd/bases/ ae47f4a00f6e998faef57e480f9a3960cd48ea16a79270861fc7442601507472
postgresql.cnpg.io_scheduledbackups.yaml cloudnative-pg/cloudnative-pg v1.30.0 config/crd/bases/ 1dffb969a92ed6b09abe59d9c848ff97c6646c7824e75f8e0b8379df8473a145
postgresql.cnpg.io_backups.yaml cloudnative-pg/cloudnative-pg v1.30.0 config/crd/bases/ 694bafce2eda4603629657c2141a89189c15250c74215002a6987538d3d78ff5
postgresql.cnpg.io_poolers.yaml cloudnative-pg/cloudnative-pg v1.30.0 config/crd/bases/ 9e0dad05355f72dceb154a12b43ebe8a410d470133ad228bf711c1fdee221124
postgresql.cnpg.io_databases.yaml cloudnative-pg/cloudnative-pg v1.30.0 config/crd/bases/ 53f7dfca6d23eb70246f41f1e7db596f8782341cd4fffb6ad990107cc8a588e7
barmancloud.cnpg.io_objectstores.yaml cloudnative-pg/plugin-barman-cloud v0.14.0 config/crd/bases/ 7c98720494253421339acd03aa77487869326ea20d4768a0c3aef8ff076daaef
external-secrets.io_externalsecrets.yaml external-secrets/external-secrets v2.9.0 config/crds/bases/ 5044be5a610ca90a075f34f03ed20b462695c43387ba9410db7f4250e47b1e2f
external-secrets.io_secretstores.yaml external-secrets/external-secrets v2.9.0 config/crds/bases/ 7f750858d393913915a2f15daff9e1d2f56ca207c09920c055d7a68cceacb641
external-secrets.io_clustersecretstores.yaml external-secrets/external-secrets v2.9.0 config/crds/bases/ f847c69ae317a76527fc37c163ddfe15d9026e14eb47dd325319e914e0433c2a
external-secrets.io_pushsecrets.yaml external-secrets/external-secrets v2.9.0 config/crds/bases/ 1d97b97b4aca0799bc8dc05d45d34adf2265ae5c3a87268026b6aafb1718f4ec
cert-manager.io_certificates.yaml cert-manager/cert-manager v1.21.1 deploy/crds/ 7ad91029c00ec959d54215b19d3b1a9b7e0247eaa60f987151c2b70d8661f8af
cert-manager.io_issuers.yaml cert-manager/cert-manager v1.21.1 deploy/crds/ 05e37efb02777e0362d24269fa103c2fc11419f9c85e31854ef873e5d9e5c5cc
cert-manager.io_clusterissuers.yaml cert-manager/cert-manager v1.21.1 deploy/crds/ 30008001b78aafb8e110af61359561104b5fafc3a4dc6ac0013245d0ee3fe4ca
monitoring.coreos.com_servicemonitors.yaml prometheus-operator/prometheus-operator v0.93.0 example/prometheus-operator-crd/ a99047972c9dd7679ce2050b9968e8a08773492e671b3e17abd476d42aa78a32
monitoring.coreos.com_podmonitors.yaml prometheus-operator/prometheus-operator v0.93.0 example/prometheus-operator-crd/ 45a93443daa687d3654f7e9631909ff7edcdf3ec09c5e60251b74aa2722aee5d
monitoring.coreos.com_prometheusrules.yaml prometheus-operator/prometheus-operator v0.93.0 example/prometheus-operator-crd/ 78be98554b9c8506ab2b4f4feb91c5f3a56e536a0a510f3a8e876a459970d56d
argoproj.io_application.yaml argoproj/argo-cd v3.5.1 manifests/crds/application-crd.yaml 5dde0e229249b6b707beb98674c1deae3949d5c319a6c45b9f5a80c99618e40c
argoproj.io_applicationset.yaml argoproj/argo-cd v3.5.1 manifests/crds/applicationset-crd.yaml 7d282054f41ca2b71a22bab04a8caf0000e07e53a62432e6ea292dae5ab4f07d
argoproj.io_appproject.yaml argoproj/argo-cd v3.5.1 manifests/crds/appproject-crd.yaml ab225266944322750136f1198d93786e4a79a0e43c8d149abfba44da30a3eac8
gateway.networking.k8s.io_httproutes.yaml kubernetes-sigs/gateway-api v1.6.1 config/crd/standard/ a424a0d6c953b162e71d1d97bb7e75012d8f1ac264e7274f2763d1b96ab39852
gateway.networking.k8s.io_gateways.yaml kubernetes-sigs/gateway-api v1.6.1 config/crd/standard/ 25b885f5870b8fff1ae82efa2628b2761cef3745900c2aecf8fb76629a01255a
gateway.networking.k8s.io_gatewayclasses.yaml kubernetes-sigs/gateway-api v1.6.1 config/crd/standard/ 53710048ba26f8620eed59d5e51b157ecf040daf5c6eef31a4b991e0808c4be5
gateway.networking.k8s.io_referencegrants.yaml kubernetes-sigs/gateway-api v1.6.1 config/crd/standard/ 8c645e9333cfa67790cc2a53e0c00076f88b2bd4230d2b49688c78bc34f9b2c3
LIST

echo "$DIR"
[ "$differ" = 0 ] || echo "some files differ from the pinned copies; see the warnings above" >&2
