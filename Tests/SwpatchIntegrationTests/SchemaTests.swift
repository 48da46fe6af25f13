import Foundation
import Glibc
import Testing

/// Whether /usr/bin/python3 has jsonschema (Debian's python3-jsonschema).
enum SchemaValidator {
  static var available: Bool {
    let check = Process()
    check.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    check.arguments = ["-c", "import jsonschema"]
    check.standardError = FileHandle.nullDevice
    guard (try? check.run()) != nil else { return false }
    check.waitUntilExit()
    return check.terminationStatus == 0
  }
}

/// Issue 17: the JSON schemas in docs/schema/ describe what swpatch really prints, so
/// that tooling can rely on them. Each is checked against real output (Debian's
/// python3-jsonschema, installed by `make deps`), and against an output broken on
/// purpose, so that a schema accepting anything would fail here.
@Suite(
  .serialized, .needsRoot, .needsFixtures,
  .enabled(
    if: SchemaValidator.available,
    "needs /usr/bin/python3 with jsonschema (make deps installs python3-jsonschema)"))
struct SchemaTests {
  static let schemas = Paths.root + "/docs/schema"

  /// nil when `json` is valid against docs/schema/`schema`, else the validator's message.
  static func violation(_ json: String, against schema: String, in ws: Workspace) -> String? {
    let instance = ws.write("instance-\(UUID().uuidString).json", json)
    let validate = Process()
    validate.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    validate.arguments = [
      "-c",
      """
      import json, sys, jsonschema
      schema = json.load(open(sys.argv[1]))
      jsonschema.Draft202012Validator.check_schema(schema)
      jsonschema.validate(json.load(open(sys.argv[2])), schema, cls=jsonschema.Draft202012Validator)
      """,
      schemas + "/" + schema, instance,
    ]
    let output = Pipe()
    validate.standardError = output
    validate.standardOutput = output
    do { try validate.run() } catch { return "cannot run python3: \(error)" }
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    validate.waitUntilExit()
    return validate.terminationStatus == 0 ? nil : String(text.suffix(600))
  }

  @Test func reportsStatusAndErrorsMatchTheirSchemas() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["10"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix", library: "libfix.so", functions: [("compute", "compute_v2")])
    #expect(
      Self.violation(
        try String(contentsOfFile: patch, encoding: .utf8), against: "patch-file.schema.json", in: ws) == nil)

    let attach = ws.swpatch("attach", "\(target.pid)", patch, "--json")
    #expect(attach.status == 0, "\(attach.output)")
    #expect(Self.violation(attach.output, against: "operation-report.schema.json", in: ws) == nil)
    for verb in ["disable", "enable"] {
      let result = ws.swpatch(verb, "\(target.pid)", "fix", "--json")
      #expect(result.status == 0, "\(result.output)")
      #expect(Self.violation(result.output, against: "operation-report.schema.json", in: ws) == nil)
    }
    let status = ws.swpatch("status", "\(target.pid)", "--json")
    #expect(status.status == 0)
    let statusProblem = Self.violation(status.output, against: "status.schema.json", in: ws)
    #expect(statusProblem == nil, "\(statusProblem ?? "")")
    let failure = ws.swpatch("disable", "\(target.pid)", "no-such-patch", "--json")
    #expect(failure.status != 0)
    #expect(Self.violation(failure.output, against: "error.schema.json", in: ws) == nil, "\(failure.output)")

    // The schemas are not vacuous: a report without stopped_us, a status hook with a
    // bad address, a patch file with an unknown key and an error without a code fail.
    let broken = attach.output.replacingOccurrences(of: #""stopped_us""#, with: #""stopped""#)
    #expect(Self.violation(broken, against: "operation-report.schema.json", in: ws) != nil)
    let badAddress = status.output.replacingOccurrences(of: #""old_addr":"0x"#, with: #""old_addr":"x"#)
    #expect(badAddress != status.output)
    #expect(Self.violation(badAddress, against: "status.schema.json", in: ws) != nil)
    #expect(
      Self.violation(
        #"{"id":"a","library":"l.so","functions":[{"old":"f","new":"g"}],"typo":1}"#,
        against: "patch-file.schema.json", in: ws)
        != nil)
    #expect(Self.violation(#"{"error":{"message":"x"}}"#, against: "error.schema.json", in: ws) != nil)
  }

  /// Every patch file the fixtures ship is valid, and the schema says what the parser
  /// refuses: each file swpatch accepts passes, each it rejects for a key fails.
  @Test func theFixturesPatchFilesMatchThePatchFileSchema() throws {
    let ws = Workspace()
    let folder = Paths.root + "/Fixtures"
    let files = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".json") }
    #expect(!files.isEmpty)
    for name in files {
      let text = try String(contentsOfFile: folder + "/" + name, encoding: .utf8)
      let problem = Self.violation(text, against: "patch-file.schema.json", in: ws)
      #expect(problem == nil, "\(name): \(problem ?? "")")
    }
  }
}
