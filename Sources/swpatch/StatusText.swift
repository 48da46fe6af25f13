import SwpatchBase
import SwpatchRegistry

/// Renders the status as an aligned tree; the first line answers "what is patched?".
func renderStatusText(_ report: StatusReport) -> String {
  if report.targets.isEmpty { return "no patched targets" }
  var lines: [String] = []
  for target in report.targets {
    let inherited = target.inheritedFrom.map { "  inherited from pid \($0) (fork)" } ?? ""
    lines.append("pid \(target.pid)  \(target.executable)  policy=\(target.policy.rawValue)\(inherited)")
    if target.hooks.isEmpty { lines.append("  no hooked functions") }
    let nameWidth = target.hooks.map(\.function.count).max() ?? 0
    let objectWidth = target.hooks.map(\.object.count).max() ?? 0
    for hook in target.hooks {
      lines.append(
        "  " + pad(hook.function, nameWidth) + "  " + pad(hook.object, objectWidth) + "  "
          + hexAddress(hook.oldAddr))
      let entries = hook.stack.compactMap { item -> StackEntry? in
        if case .replacement(let entry) = item { entry } else { nil }
      }
      let patchWidth = entries.map(\.patch.count).max() ?? 0
      let replacementWidth = entries.map(\.replacement.count).max() ?? 0
      for (n, entry) in entries.enumerated() {
        // A `prev` names what the replacement calls as the version below it.
        let below =
          n + 1 < entries.count ? "\(entries[n + 1].patch) \(entries[n + 1].replacement)" : "original"
        let prev = entry.prev.map { _ in "  prev -> \(below)" } ?? ""
        lines.append(
          "    " + (n == 0 ? "* " : "  ") + pad(entry.patch, patchWidth) + "  "
            + pad(entry.replacement, replacementWidth) + "  " + hexAddress(entry.address) + prev)
      }
      lines.append("      (original)")
      if let drift = hook.drift { lines.append("    DRIFT: \(drift)") }
    }
    let patches = target.patches.map { patch in
      "\(patch.id) \(patch.state.rawValue)" + (patch.sha256.map { " sha256=\($0.prefix(16))…" } ?? "")
    }
    lines.append("  patches: " + (patches.isEmpty ? "none" : patches.joined(separator: ", ")))
    let idWidth = target.patches.map(\.id.count).max() ?? 0
    for patch in target.patches {
      guard let origin = patch.origin else { continue }
      let onDisk = origin.onDisk.map { "  on disk: \($0.rawValue)" } ?? ""
      let file = origin.patchFile.map { "  from \($0)" } ?? ""
      lines.append(
        "    " + pad(patch.id, idWidth) + "  " + origin.path + "  sha256=\(origin.sha256 ?? "unknown")"
          + onDisk
          + file)
    }
    if target.patches.contains(where: { $0.state == .disabled }) {
      // Unloading could pull code from under a thread that is still to return into it.
      lines.append("  note: disabled patches stay loaded (threads may still return into their code)")
    }
  }
  return lines.joined(separator: "\n")
}

private func pad(_ text: String, _ width: Int) -> String {
  text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}
