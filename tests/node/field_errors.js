// A Node.js client written from proto/filtercast/v1/filtercast.proto alone: it sends bad
// requests and prints, one JSON line each, the google.rpc.Status details it gets back.
// Usage: node field_errors.js HOST:PORT PROTO_DIR   (run by tests/ops/test_node_client.py)
const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const [address, protoDir] = process.argv.slice(2);
const googleDir = path.dirname(require.resolve("google-proto-files/package.json"));
const options = { includeDirs: [protoDir, googleDir], keepCase: true };
const service = grpc.loadPackageDefinition(
  loader.loadSync("filtercast/v1/filtercast.proto", options),
).filtercast.v1.FilterVisualizerService;

const root = new protobuf.Root();
root.resolvePath = (_origin, target) => path.join(googleDir, target);
root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = root.lookupType("google.rpc.Status");

function details(error) {
  const [raw] = error.metadata.get("grpc-status-details-bin");
  const status = Status.decode(raw);
  return status.details.map((any) => {
    const type = root.lookupType(any.type_url.split("/").pop());
    return { type: type.fullName.slice(1), ...type.toObject(type.decode(any.value)) };
  });
}

function visualize(client, request) {
  return new Promise((resolve) => {
    const call = client.VisualizeFilters(request);
    call.on("data", () => {});
    call.on("error", (error) => resolve({ code: grpc.status[error.code], details: details(error) }));
    call.on("end", () => resolve({ code: "OK", details: [] }));
  });
}

async function main() {
  const client = new service(address, grpc.credentials.createInsecure());
  const requests = [
    { overrides: { size: 4 } },
    { filters: { range: { start: 60, stop: 70 } } },
    { model: "nosuch" },
  ];
  for (const request of requests) {
    console.log(JSON.stringify(await visualize(client, request)));
  }
  client.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
