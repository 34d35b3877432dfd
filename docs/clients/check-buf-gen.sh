#!/usr/bin/env bash
# Runs the documented Buf template (buf.gen.yaml) offline, so that it cannot break unnoticed:
# the template's remote plugins are replaced by the same generators installed locally (protoc's
# built-in python, pyi and java; Debian's grpc_python_plugin, grpc_java_plugin, protoc-gen-go and
# protoc-gen-go-grpc), everything else (managed mode, inputs, outputs, options) is the template as
# published. It generates into a temporary directory and checks that each language's messages
# and service stubs are there. scripts/test runs it after installing the client toolchains.
#
# Debian packages: protobuf-compiler protobuf-compiler-grpc protobuf-compiler-grpc-java-plugin
#   protoc-gen-go protoc-gen-go-grpc; and npx (npm) for the Buf CLI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for tool in protoc grpc_python_plugin grpc_java_plugin protoc-gen-go protoc-gen-go-grpc npx; do
  command -v "$tool" >/dev/null || { echo "missing $tool: install the packages listed in $0" >&2; exit 1; }
done

# Each remote plugin of the template, and its local stand-in.
declare -A local_plugin=(
  [buf.build/protocolbuffers/python]="protoc_builtin: python"
  [buf.build/protocolbuffers/pyi]="protoc_builtin: pyi"
  [buf.build/grpc/python]="local: $(command -v grpc_python_plugin)"
  [buf.build/protocolbuffers/java]="protoc_builtin: java"
  [buf.build/grpc/java]="local: $(command -v grpc_java_plugin)"
  [buf.build/protocolbuffers/go]="local: $(command -v protoc-gen-go)"
  [buf.build/grpc/go]="local: $(command -v protoc-gen-go-grpc)"
)
template="$work/buf.gen.local.yaml"
cp "$here/buf.gen.yaml" "$template"
remotes=$(sed -nE 's/^ *- remote: *([^ :]+).*/\1/p' "$here/buf.gen.yaml")
for remote in $remotes; do
  replacement=${local_plugin[$remote]:-}
  [ -n "$replacement" ] || { echo "buf.gen.yaml: no local stand-in for $remote" >&2; exit 1; }
  sed -i -E "s#^( *- )remote: *$remote(:[^ ]*)?\$#\1$replacement#" "$template"
done
if grep -q 'remote:' "$template"; then
  echo "buf.gen.yaml: a remote plugin is left: $(grep 'remote:' "$template")" >&2
  exit 1
fi
# From the repository root, as documented; the outputs (gen/python, ...) go under $work.
(cd "$root" && npx --yes @bufbuild/buf@1.75.0 generate --template "$template" --output "$work")

gen="$work/gen"
expected=(
  python/subsidy/application/v1/application_service_pb2.py
  python/subsidy/application/v1/application_service_pb2.pyi
  python/subsidy/application/v1/application_service_pb2_grpc.py
  python/subsidy/notification/v1/notification_service_pb2_grpc.py
  java/subsidy/application/v1/ApplicationServiceGrpc.java
  java/subsidy/application/v1/SubmitClaimRequest.java
  java/subsidy/notification/v1/NotificationServiceGrpc.java
  go/subsidy/application/v1/application_service.pb.go
  go/subsidy/application/v1/application_service_grpc.pb.go
  go/subsidy/notification/v1/notification_service_grpc.pb.go
)
for file in "${expected[@]}"; do
  [ -s "$gen/$file" ] || { echo "buf.gen.yaml did not generate gen/$file" >&2; exit 1; }
done
# Only the subsidy packages: google.type and google.rpc come from each language's googleapis.
if find "$gen" -path '*google*' | grep -q .; then
  echo "buf.gen.yaml generated google/ files: $(find "$gen" -path '*google*' | head -n 3)" >&2
  exit 1
fi
# Managed mode gives the Go files the template's module path.
grep -q 'package applicationv1' "$gen/go/subsidy/application/v1/application_service.pb.go"
grep -q '"example.gov.cn/agency/subsidyclient/gen/go/subsidy/access/v1"' \
  "$gen/go/subsidy/application/v1/application_service.pb.go"
python3 -m py_compile "$gen/python/subsidy/application/v1/application_service_pb2_grpc.py"
echo "buf.gen.yaml: $(find "$gen" -type f | wc -l) files for Python, Java and Go, with local plugins"
