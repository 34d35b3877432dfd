#!/usr/bin/env bash
# Generates the Java stubs from proto/, compiles src/example/Example.java with them against
# Debian's jars (no Maven), and runs it. Configuration by environment: see ../README.md.
#
# Debian packages (bookworm): openjdk-17-jdk-headless protobuf-compiler
#   protobuf-compiler-grpc-java-plugin libgrpc-java libprotobuf-java libnetty-java
#   libnetty-tcnative-java libnetty-tcnative-jni libperfmark-java libguava-java
#   liberror-prone-java libgeronimo-annotation-1.3-spec-java
#
# google/type and google/rpc are generated from the vendored proto/google/ files: Debian's
# libgoogle-common-protos-java (1.16) predates google.rpc.ErrorInfo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto=${SUBSIDY_PROTO_DIR:-$here/../../../proto}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

jars=/usr/share/java
classpath=$(printf "$jars/%s.jar:" \
  grpc-api grpc-context grpc-core grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub \
  protobuf guava perfmark-api error_prone_annotations geronimo-annotation-1.3-spec \
  netty-buffer netty-codec netty-codec-http netty-common netty-handler netty-resolver \
  netty-transport netty-tcnative)
# Debian ships netty's HTTP/2 codec under its versioned name only.
classpath+=$(ls "$jars"/netty-codec-http2-*.jar | head -n 1)
for jar in ${classpath//:/ }; do
  [ -f "$jar" ] || { echo "missing $jar: install the Debian packages listed in $0" >&2; exit 1; }
done

mkdir -p "$work/gen" "$work/classes"
(cd "$proto" && protoc -I. \
  --java_out="$work/gen" \
  --plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin --grpc-java_out="$work/gen" \
  google/type/money.proto google/type/date.proto \
  google/rpc/status.proto google/rpc/error_details.proto \
  subsidy/access/v1/access.proto \
  subsidy/application/v1/application_service.proto \
  subsidy/notification/v1/notification_service.proto)
javac -nowarn -encoding UTF-8 -d "$work/classes" -cp "$classpath" \
  $(find "$work/gen" "$here/src" -name '*.java') 2>&1 | grep -v '^Note:' >&2 || true
[ -f "$work/classes/example/Example.class" ] || { echo "javac failed" >&2; exit 1; }
# TLS: gRPC needs ALPN, which Debian's netty cannot do with the JDK's TLS (its
# JdkAlpnApplicationProtocolNegotiator is stripped), so netty uses OpenSSL through
# netty-tcnative. Netty loads it as libnetty_tcnative.so, Debian installs it as
# libnetty-tcnative.so, and the library checks its own file name: give it a copy.
mkdir -p "$work/jni"
cp "/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)/jni/libnetty-tcnative.so" "$work/jni/libnetty_tcnative.so"
java -Djava.library.path="$work/jni" -cp "$work/classes:$classpath" example.Example
