import Foundation
import Glibc
import SwpatchProcess

/// Median, min and max of repeated runs. The machine is shared, so a single run says
/// little; the median is the figure, min and max show the spread.
struct Summary: Codable {
  var median: Double
  var min: Double
  var max: Double
  var runs: Int

  init?(_ values: [Double]) {
    guard !values.isEmpty else { return nil }
    let sorted = values.sorted()
    let mid = sorted.count / 2
    median = sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    min = sorted[0]
    max = sorted[sorted.count - 1]
    runs = sorted.count
  }
}

/// Units the table prints; values are stored in these units.
enum Unit: String, Codable {
  case us, ms, s, mb = "MB", callsPerSecond = "Mcalls/s", ratio = "x"
}

/// One line of the table: a measurement with its summary, or why there is none.
struct Row: Codable {
  var section: String
  var name: String
  var unit: Unit
  var summary: Summary?
  /// Why there is no figure (peer not installed, tool failed), or a caveat.
  var note: String?
}

/// One target of issue 7, met or not, with the figure it was judged on.
struct TargetCheck: Codable {
  var target: String
  /// nil: not measured (the note says why).
  var met: Bool?
  var figure: String
}

/// The machine a run was made on.
struct Machine: Codable {
  var cpus: Int
  var cpuModel: String
  var kernel: String
  var date: String

  static var current: Machine {
    let model = TargetProcess.cpuModel
    var name = utsname()
    uname(&name)
    let release = withUnsafeBytes(of: &name.release) {
      String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
    }
    let formatter = ISO8601DateFormatter()
    return Machine(
      cpus: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), cpuModel: model, kernel: release,
      date: formatter.string(from: Date()))
  }
}

/// Everything one run measured: printed as a table and written as JSON.
final class Report {
  private(set) var rows: [Row] = []
  private(set) var targets: [TargetCheck] = []
  let machine = Machine.current

  /// Adds a row of `values` (already in `unit`); an empty list needs a `note`.
  @discardableResult
  func add(_ section: String, _ name: String, _ unit: Unit, _ values: [Double], note: String? = nil)
    -> Summary?
  {
    let summary = Summary(values)
    rows.append(Row(section: section, name: name, unit: unit, summary: summary, note: note))
    return summary
  }

  func missing(_ section: String, _ name: String, _ unit: Unit, because note: String) {
    rows.append(Row(section: section, name: name, unit: unit, summary: nil, note: note))
  }

  func row(_ section: String, _ name: String) -> Summary? {
    rows.first { $0.section == section && $0.name == name }?.summary
  }

  func check(_ target: String, met: Bool?, figure: String) {
    targets.append(TargetCheck(target: target, met: met, figure: figure))
  }

  // MARK: Output

  var table: String {
    let width = max(44, (rows.map(\.name.count).max() ?? 0) + 2)
    var lines: [String] = []
    var section = ""
    // Sections in the order they first appear, each with all of its rows.
    var order: [String] = []
    for row in rows where !order.contains(row.section) { order.append(row.section) }
    let grouped = order.flatMap { name in rows.filter { $0.section == name } }
    for row in grouped {
      if row.section != section {
        section = row.section
        lines.append("")
        lines.append("== \(section)")
        lines.append(
          pad("", width) + pad("median", 12) + pad("min", 12) + pad("max", 12) + pad("runs", 6))
      }
      var line = pad(row.name, width)
      if let s = row.summary {
        line += [s.median, s.min, s.max].map { pad(format($0, row.unit), 12) }.joined()
        line += pad("\(s.runs)", 6)
      } else {
        line += pad("-", 42)
      }
      if let note = row.note { line += "  " + note }
      lines.append(line)
    }
    lines.append("")
    lines.append("== Targets (issue 7)")
    for t in targets {
      let verdict = t.met.map { $0 ? "MET    " : "NOT MET" } ?? "N/A    "
      lines.append("\(verdict)  \(t.target): \(t.figure)")
    }
    return
      "swpatch bench on \(machine.cpus) CPUs (\(machine.cpuModel)), kernel \(machine.kernel), \(machine.date)"
      + "\n" + lines.joined(separator: "\n")
  }

  func json() throws -> Data {
    struct Document: Encodable {
      var machine: Machine
      var rows: [Row]
      var targets: [TargetCheck]
    }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return try encoder.encode(Document(machine: machine, rows: rows, targets: targets))
  }

  private func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
  }
}

/// A value in `unit` with three significant digits and its unit.
func format(_ value: Double, _ unit: Unit) -> String {
  let digits = value >= 100 ? 0 : value >= 10 ? 1 : value >= 1 ? 2 : 3
  return String(format: "%.\(digits)f", value) + " " + unit.rawValue
}
