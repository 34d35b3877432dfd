#!/usr/bin/env bash
# Generates the Go stubs from proto/, builds main.go offline in GOPATH mode against Debian's Go
# packages (no module proxy), and runs it. Configuration by environment: see ../README.md.
#
# Debian packages (bookworm): golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc
#   golang-google-grpc-dev golang-google-genproto-dev golang-google-protobuf-dev
#   golang-github-golang-protobuf-1-5-dev
#
# The subsidy protos carry no go_package: the M options below place them under the import path
# subsidyclient/gen (buf.gen.yaml does the same with managed mode and your module's path).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto=${SUBSIDY_PROTO_DIR:-$here/../../../proto}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

files=(subsidy/access/v1/access.proto subsidy/application/v1/application_service.proto
  subsidy/notification/v1/notification_service.proto)
mapping=""
for file in "${files[@]}"; do mapping+="M$file=subsidyclient/gen/$(dirname "$file"),"; done
mkdir -p "$work/src/subsidyclient/gen" "$work/src/subsidyclient/example"
(cd "$proto" && protoc -I. \
  --go_out="$work/src/subsidyclient/gen" --go_opt="${mapping}paths=source_relative" \
  --go-grpc_out="$work/src/subsidyclient/gen" --go-grpc_opt="${mapping}paths=source_relative" \
  "${files[@]}")
cp "$here"/*.go "$work/src/subsidyclient/example/"
export GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOFLAGS=
(cd "$work/src/subsidyclient/example" && go build -o "$work/example" .)
"$work/example"
