import SwpatchBase
import SwpatchRegistry
import SwpatchX86

/// Whether a target's memory still holds what the registry recorded for it.
enum Drift {
  /// The hooks of `state` whose memory, as `read` gives it (empty when unreadable), is
  /// not what the registry recorded, by old address, with what was found: each hook's
  /// entry must hold swpatch's jump and its slot cell the address of the top
  /// replacement. Something else changed it; swpatch reports it and never repairs it.
  static func of(_ state: TargetState, read: (UInt64, Int) -> [UInt8]) -> [UInt64: String] {
    var found: [UInt64: String] = [:]
    func shown(_ bytes: [UInt8]) -> String { bytes.isEmpty ? "unreadable memory" : hexBytes(bytes) }
    for hook in state.sortedHooks {
      let install = hook.install
      let entry = read(install.entryAddr, install.jumpBytes.count)
      if entry != install.jumpBytes {
        found[hook.site.oldAddr] =
          "entry \(hexAddress(install.entryAddr)) holds \(shown(entry)), not swpatch's jump \(shown(install.jumpBytes))"
        continue
      }
      guard let active = hook.active else { continue }
      let cell = read(install.cellAddr, 8)
      if cell != TrampolineSlot.cell(target: active.address) {
        found[hook.site.oldAddr] =
          "slot cell \(hexAddress(install.cellAddr)) holds \(shown(cell)), not the address of \(active.replacement) (\(hexAddress(active.address)))"
      }
    }
    return found
  }
}
