import SwpatchBase

/// A version of a function that an operation switches away from. Under stack
/// consistency no thread may be executing it (at any depth of its stack) when the
/// switch is made, or that thread would go on running code the operation retires.
public struct LeavingVersion: Hashable, Sendable, CustomStringConvertible {
  /// The original function, or a replacement on its func stack.
  public enum Kind: Hashable, Sendable {
    case original
    case replacement(patch: String)
  }
  /// The hooked function the version belongs to.
  public var site: FunctionSite
  public var kind: Kind
  /// The version's own name: the original's, or the replacement's.
  public var name: String
  /// Its first byte in the target.
  public var address: UInt64

  public init(site: FunctionSite, kind: Kind, name: String, address: UInt64) {
    self.site = site
    self.kind = kind
    self.name = name
    self.address = address
  }

  public var description: String {
    switch kind {
    case .original: "\(name) \(hexAddress(address))"
    case .replacement(let patch): "\(name) (\(patch)) \(hexAddress(address))"
    }
  }
}

extension TargetState {
  /// What `plan` switches away from, in effect order without repeats: for every function
  /// it changes, the version active now (the original, or the top of the func stack).
  /// An attach or enable retires the original of every function it redirects as well,
  /// since a thread still inside it (from before an earlier patch) runs what the patch
  /// replaces; a disable retires only the replacements it takes off the top.
  public func versionsLeaving(_ plan: Plan) -> [LeavingVersion] {
    var versions: [LeavingVersion] = []
    func add(_ version: LeavingVersion) {
      if !versions.contains(version) { versions.append(version) }
    }
    let redirects: Bool
    switch plan.operation {
    case .attach, .enable: redirects = true
    case .disable: redirects = false
    case .upgrade(let id):
      // The old build is retired wherever it sits: on top (the slot), and lower down
      // (the `prev` cell of the entry above calls it).
      for hook in sortedHooks {
        for entry in hook.stack where entry.patch == id {
          add(
            LeavingVersion(
              site: hook.site, kind: .replacement(patch: id), name: entry.replacement, address: entry.address)
          )
        }
      }
      return versions
    }
    for effect in plan.effects {
      let hook = hooks[effect.oldAddr]
      let site: FunctionSite
      switch effect {
      case .installHook(let installed, _): site = installed
      // A `prev` cell changes what a replacement calls, not which version runs.
      case .setPrev: continue
      case .setSlot, .removeHook:
        guard let hook else { continue }
        site = hook.site
      }
      let original = LeavingVersion(site: site, kind: .original, name: site.name, address: site.oldAddr)
      if let active = hook?.active {
        add(
          LeavingVersion(
            site: site, kind: .replacement(patch: active.patch), name: active.replacement,
            address: active.address))
      } else {
        add(original)
      }
      if case .removeHook = effect { continue }  // back to the original: it is not retired
      if redirects { add(original) }
    }
    return versions
  }
}
