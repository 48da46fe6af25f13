import Foundation

/// Judges the run against the targets of issue 7, each with the figure it rests on.
struct Targets {
  let report: Report

  func evaluate() {
    clientStartup()
    attachWall()
    otherThreadStall()
    hotStall()
    switchStop()
    callRate()
    lookups()
    memory()
    allOf()
  }

  private func allOf() {
    let row = report.row(AllOfBench.section, AllOfBench.label("attach", processes: 1000, "wall"))
    report.check(
      "attach --all-of over 1,000 processes <= 10 s (issue 11)", met: row.map { $0.median <= 10 },
      figure: row.map { format($0.median, .s) } ?? "not measured")
  }

  /// Issue 16: `swpatch status` against a running daemon, spawn to exit, with the two
  /// references of the same run beside it (the load moves all three).
  private func clientStartup() {
    let status = report.row(StartupBench.section, StartupBench.status)
    let truth = report.row(StartupBench.section, StartupBench.truth)
    let python = report.row(StartupBench.section, StartupBench.python)
    let references = [("/bin/true", truth), ("python3 -c pass", python)].compactMap { name, row in
      row.map { "\(name) \(format($0.median, .ms))" }
    }
    report.check(
      "client start-up <= 8 ms (swpatch status, daemon running, median)", met: status.map { $0.median <= 8 },
      figure: status.map {
        format($0.median, .ms) + (references.isEmpty ? "" : " (\(references.joined(separator: ", ")))")
      } ?? "not measured")
  }

  private func attachWall() {
    for peer in ["gdb", "frida"] {
      let ratio = report.row(PeerBench.section, "swpatch wall / \(peer) wall (same repetition)")
      report.check(
        "attach wall time <= 1/10 of \(peer)'s (2 threads, same run)", met: ratio.map { $0.median <= 0.1 },
        figure: ratio.map { "swpatch/\(peer) = \(format($0.median, .ratio)) (median)" } ?? "no \(peer) figure"
      )
    }
  }

  private func otherThreadStall() {
    for threads in [2, 16] {
      let name = OperationBench.label("attach", threads: threads, functions: 1) + ": stall (other thread)"
      let stall = report.row(OperationBench.section, name)
      report.check(
        "longest stop of a non-borrowed thread during attach <= 1 ms median, \(threads) threads",
        met: stall.map { $0.median <= 1000 }, figure: stall.map { format($0.median, .us) } ?? "not measured")
    }
  }

  /// Issue 14: on the hot-function program with `--consistency entry`, the longest
  /// stall of a worker (never the thread borrowed for dlopen) at 2 workers.
  private func hotStall() {
    for op in ["attach", "enable"] {
      let name = HotBench.label(op, threads: 2, consistency: "entry") + ": worker stall"
      let stall = report.row(HotBench.section, name)
      let stop = report.row(HotBench.section, HotBench.label(op, threads: 2, consistency: "entry") + ": stop")
      let baseline = report.row(
        HotBench.section,
        HotBench.label(HotBench.baseline, threads: 2, consistency: "entry") + ": worker stall")
      let context = [
        stop.map { "stop \(format($0.median, .us))" },
        baseline.map { "no-stop baseline \(format($0.median, .us))" },
      ].compactMap { $0 }.joined(separator: ", ")
      report.check(
        "hot-function program, \(op) with --consistency entry: longest worker stall <= 1 ms median, 2 workers",
        met: stall.map { $0.median <= 1000 },
        figure: stall.map { format($0.median, .us) + (context.isEmpty ? "" : " (\(context))") }
          ?? "not measured")
    }
  }

  private func switchStop() {
    for (threads, limit) in [(1, 200.0), (200, 5000.0)] {
      let name = OperationBench.label("enable", threads: threads, functions: 1) + ": stop"
      let stop = report.row(OperationBench.section, name)
      let entry = report.row(
        OperationBench.section,
        OperationBench.label(OperationBench.enableEntry, threads: threads, functions: 1) + ": stop")
      let without = entry.map { " (\(format($0.median, .us)) with --consistency entry)" } ?? ""
      report.check(
        "switch (enable, library loaded) stops a \(threads)-thread target <= \(format(limit, .us)) median",
        met: stop.map { $0.median <= limit },
        figure: stop.map { format($0.median, .us) + without } ?? "not measured")
    }
  }

  private func callRate() {
    let ours = report.row(PeerBench.rateSection, "swpatch patched / replacement called directly")
    report.check(
      "patched call rate >= 0.9x calling the replacement directly", met: ours.map { $0.median >= 0.9 },
      figure: ours.map { format($0.median, .ratio) } ?? "not measured")
    for peer in ["gdb", "frida"] {
      let theirs = report.row(PeerBench.rateSection, "\(peer) patched / replacement called directly")
      var met: Bool?
      if let ours, let theirs { met = ours.median >= theirs.median }
      report.check(
        "patched call rate not below \(peer)'s", met: met,
        figure: theirs.map {
          "swpatch \(format(ours?.median ?? 0, .ratio)) vs \(peer) \(format($0.median, .ratio)) of direct"
        }
          ?? "no \(peer) figure")
    }
  }

  private func lookups() {
    let section = "symbol resolution in libLLVM-15 loaded into a target"
    for (kind, limit) in [("cold", 1000.0), ("warm", 10.0)] {
      let row = report.row(section, "swpatch in-process, 1000 names, \(kind)")
      report.check(
        "1,000 look-ups in libLLVM-15, \(kind) < \(format(limit, .ms))", met: row.map { $0.median < limit },
        figure: row.map { format($0.median, .ms) } ?? "not measured")
    }
  }

  private func memory() {
    let status = report.row(MemoryBench.section, MemoryBench.bigStatus)
    report.check(
      "CLI peak RSS for status <= 40 MB", met: status.map { $0.max <= 40 },
      figure: status.map { "\(format($0.max, .mb)) (max, 1,001 hooks)" } ?? "not measured")
    let daemon = report.row(MemoryBench.section, MemoryBench.daemonPeak)
    report.check(
      "daemon peak RSS with 10 targets and libLLVM-15's symbols <= 150 MB", met: daemon.map { $0.max <= 150 },
      figure: daemon.map { "\(format($0.max, .mb)) (VmHWM)" } ?? "not measured")
  }
}
