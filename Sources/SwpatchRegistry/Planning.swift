import SwpatchBase

/// The decided next state, minus the installs only the patcher can supply.
struct Outcome {
  var policy: DisablePolicy
  var patches: [Patch]
  /// Non-empty stacks only, bottom first.
  var stacks: [UInt64: [StackEntry]]
  var sites: [UInt64: FunctionSite]
  var nextSeq: UInt64
  var alsoDisabled: [String] = []
}

extension TargetState {
  /// Plans attaching a new patch, enabled on top; `patch.state` and `enableSeq` are ignored.
  public func planAttach(_ patch: Patch, policy requested: DisablePolicy? = nil) throws -> Plan {
    let attached = try validatedForAttach(patch, policy: requested)
    return try plan(.attach(patchID: patch.id), attaching: attached, policy: requested)
  }

  /// Plans putting `patch`, a new build of the known patch of the same id (same
  /// functions, another library), in place of the old one: every stack entry of the old
  /// build becomes the new build's, in the same position, and every `prev` cell of those
  /// stacks is written again. Its state (enabled or disabled) does not change.
  public func planUpgrade(_ patch: Patch) throws -> Plan {
    let upgraded = try validatedForUpgrade(patch)
    return try plan(.upgrade(patchID: patch.id), attaching: upgraded, policy: nil)
  }

  public func planEnable(_ id: String) throws -> Plan {
    try plan(.enable(patchID: id), attaching: nil, policy: nil)
  }

  public func planDisable(_ id: String) throws -> Plan {
    try plan(.disable(patchID: id), attaching: nil, policy: nil)
  }

  /// The state after the patcher executed `plan`; `installs` holds one entry per installHook, by oldAddr.
  public func committing(
    _ plan: Plan, installs: [UInt64: HookInstall], newPages: [TrampolinePage] = [],
    newLibraries: [LoadedLibrary] = []
  ) throws -> TargetState {
    guard plan.target == id else { throw RegistryError.wrongTarget(planned: plan.target, actual: id) }
    guard plan.generation == generation else {
      throw RegistryError.stalePlan(pid: id.pid, planned: plan.generation, current: generation)
    }
    if let patch = plan.patch {
      if case .upgrade = plan.operation {
        _ = try validatedForUpgrade(patch)
      } else {
        _ = try validatedForAttach(patch, policy: plan.policy)
      }
    }
    // Replaying is deterministic for an unchanged generation; a mismatch means the plan was tampered with.
    let outcome = try self.outcome(
      plan.operation, attaching: plan.patch, policy: plan.patch == nil ? nil : plan.policy)
    guard effects(to: outcome).effects == plan.effects else {
      throw RegistryError.stalePlan(pid: id.pid, planned: plan.generation, current: generation)
    }
    let expected = Set(plan.newHooks)
    let given = Set(installs.keys)
    guard expected == given else {
      throw RegistryError.installMismatch(
        missing: expected.subtracting(given).sorted(), unexpected: given.subtracting(expected).sorted())
    }
    var newHooks: [UInt64: Hook] = [:]
    for (addr, stack) in outcome.stacks {
      if let old = hooks[addr] {
        newHooks[addr] = Hook(site: old.site, install: old.install, stack: stack)
      } else {
        newHooks[addr] = Hook(site: outcome.sites[addr]!, install: installs[addr]!, stack: stack)
      }
    }
    var next = TargetState(
      id: id, executable: executable, policy: outcome.policy, hooks: newHooks, patches: outcome.patches,
      pages: pages + newPages, libraries: libraries + newLibraries, nextSeq: outcome.nextSeq,
      generation: generation + 1)
    next.execID = execID
    next.inheritedFrom = inheritedFrom
    return next
  }

  // MARK: Deciding

  private func plan(_ operation: Operation, attaching patch: Patch?, policy: DisablePolicy?) throws -> Plan {
    let outcome = try self.outcome(operation, attaching: patch, policy: policy)
    let (effects, steps) = effects(to: outcome)
    return Plan(
      target: id, operation: operation, effects: effects, generation: generation, policy: outcome.policy,
      patch: patch, alsoDisabled: outcome.alsoDisabled, steps: steps)
  }

  private func validatedForAttach(_ patch: Patch, policy requested: DisablePolicy?) throws -> Patch {
    if let existing = self.patch(patch.id) {
      // The same id with another build is never taken for "already applied": enabling
      // the stored copy would silently run the old code.
      if let stored = existing.sha256, let new = patch.sha256, stored != new {
        throw RegistryError.libraryChanged(id: patch.id, pid: id.pid, stored: stored, new: new)
      }
      throw RegistryError.alreadyApplied(id: patch.id, pid: id.pid, state: existing.state)
    }
    if let requested, requested != policy, !patches.isEmpty {
      throw RegistryError.policyMismatch(pid: id.pid, existing: policy, requested: requested)
    }
    func invalid(_ reason: String) -> RegistryError { .invalidPatch(id: patch.id, reason: reason) }
    if patch.id.isEmpty { throw invalid("the id is empty; give the patch a name") }
    if patch.functions.isEmpty { throw invalid("it replaces no functions; list at least one") }
    if patch.replace && !patch.requires.isEmpty {
      throw invalid(
        "replace: true cannot be combined with requires (a replace patch disables all others); drop one")
    }
    if patch.requires.contains(patch.id) { throw invalid("it requires itself; remove it from requires") }
    var seen: [UInt64: String] = [:]
    for function in patch.functions {
      if let first = seen.updateValue(function.site.name, forKey: function.site.oldAddr) {
        throw invalid(
          "\(first) and \(function.site.name) both replace \(hexAddress(function.site.oldAddr));"
            + " keep one replacement per function")
      }
    }
    var attached = patch
    attached.state = .disabled
    attached.enableSeq = 0
    return attached
  }

  /// A new build of a known patch: the same functions, `requires` and `replace` (only
  /// the library changes), and other content than the stored one.
  private func validatedForUpgrade(_ patch: Patch) throws -> Patch {
    guard let existing = self.patch(patch.id) else {
      throw RegistryError.unknownPatch(id: patch.id, pid: id.pid, known: patchIDs)
    }
    if existing.sha256 != nil && existing.sha256 == patch.sha256 {
      throw RegistryError.alreadyApplied(id: patch.id, pid: id.pid, state: existing.state)
    }
    func names(_ p: Patch) -> [String] {
      p.functions.map { "\($0.site.name)@\(hexAddress($0.site.oldAddr))" }.sorted()
    }
    var differences: [String] = []
    if names(existing) != names(patch) {
      differences.append(
        "it replaces \(names(patch).joined(separator: ", ")), the stored build \(names(existing).joined(separator: ", "))"
      )
    }
    if Set(existing.requires) != Set(patch.requires) { differences.append("its requires differ") }
    if existing.replace != patch.replace { differences.append("its replace differs") }
    if !differences.isEmpty {
      throw RegistryError.upgradeMismatch(id: patch.id, reason: differences.joined(separator: "; "))
    }
    var upgraded = patch
    upgraded.state = existing.state
    upgraded.enableSeq = existing.enableSeq
    return upgraded
  }

  /// Runs the operation on a copy of the model; `patch` is the validated patch for attach.
  func outcome(_ operation: Operation, attaching patch: Patch?, policy requested: DisablePolicy?) throws
    -> Outcome
  {
    var out = Outcome(
      policy: policy, patches: patches, stacks: hooks.mapValues(\.stack),
      sites: hooks.mapValues(\.site), nextSeq: nextSeq)
    switch operation {
    case .attach(let patchID):
      guard let patch, patch.id == patchID else {
        throw RegistryError.invalidPatch(id: patchID, reason: "the plan does not carry the patch; plan again")
      }
      if patches.isEmpty, let requested { out.policy = requested }
      try checkRequirements(of: patch)
      out.patches.append(patch)
      push(at: out.patches.count - 1, into: &out)
    case .upgrade(let patchID):
      guard let patch, patch.id == patchID else {
        throw RegistryError.invalidPatch(id: patchID, reason: "the plan does not carry the patch; plan again")
      }
      let i = try position(of: patchID)
      out.patches[i] = patch
      let builds = Dictionary(patch.functions.map { ($0.site.oldAddr, $0) }, uniquingKeysWith: { a, _ in a })
      for (addr, stack) in out.stacks {
        out.stacks[addr] = stack.map { entry in
          guard entry.patch == patchID, let new = builds[addr] else { return entry }
          return StackEntry(
            patch: patchID, replacement: new.replacement, address: new.replacementAddr, prevCell: new.prevCell
          )
        }
      }
    case .enable(let patchID):
      let i = try position(of: patchID)
      guard patches[i].state == .disabled else {
        throw RegistryError.alreadyEnabled(id: patchID, pid: id.pid)
      }
      if patches[i].replace && !patches[i].requires.isEmpty {
        throw RegistryError.invalidPatch(
          id: patchID, reason: "replace: true cannot be combined with requires; attach a fixed patch instead")
      }
      try checkRequirements(of: patches[i])
      push(at: i, into: &out)
    case .disable(let patchID):
      let i = try position(of: patchID)
      guard patches[i].state == .enabled else {
        throw RegistryError.alreadyDisabled(id: patchID, pid: id.pid)
      }
      let dependants = patches.filter {
        $0.state == .enabled && $0.id != patchID && $0.requires.contains(patchID)
      }
      if !dependants.isEmpty { throw RegistryError.requiredBy(id: patchID, dependants: dependants.map(\.id)) }
      if policy == .stack { try checkOnTop(patches[i]) }
      pop(at: i, from: &out)
    }
    return out
  }

  private func position(of patchID: String) throws -> Int {
    guard let i = patchIndex[patchID] else {
      throw RegistryError.unknownPatch(id: patchID, pid: id.pid, known: patchIDs)
    }
    return i
  }

  private func checkRequirements(of patch: Patch) throws {
    var missing: [String] = []
    for required in patch.requires
    where self.patch(required)?.state != .enabled && !missing.contains(required) {
      missing.append(required)
    }
    if !missing.isEmpty {
      throw RegistryError.missingRequirement(id: patch.id, pid: id.pid, missing: missing)
    }
  }

  private func checkOnTop(_ patch: Patch) throws {
    var blockers: [StackBlocker] = []
    for function in patch.functions {
      let addr = function.site.oldAddr
      guard let stack = hooks[addr], let at = stack.stack.lastIndex(where: { $0.patch == patch.id }) else {
        continue
      }
      var above: [String] = []
      for entry in stack.stack[(at + 1)...].reversed() where !above.contains(entry.patch) {
        above.append(entry.patch)
      }
      if !above.isEmpty {
        blockers.append(StackBlocker(function: stack.site.name, oldAddr: addr, patchesAbove: above))
      }
    }
    if !blockers.isEmpty { throw RegistryError.blockedByStack(id: patch.id, blockers: blockers) }
  }

  /// Enables the patch at `i` on top of its stacks; a replace patch first clears everything else.
  private func push(at i: Int, into out: inout Outcome) {
    let patch = out.patches[i]
    if patch.replace {
      for j in out.patches.indices where j != i && out.patches[j].state == .enabled {
        out.patches[j].state = .disabled
        out.alsoDisabled.append(out.patches[j].id)
      }
      out.stacks = [:]
    }
    for function in patch.functions {
      let addr = function.site.oldAddr
      out.stacks[addr, default: []].append(
        StackEntry(
          patch: patch.id, replacement: function.replacement, address: function.replacementAddr,
          prevCell: function.prevCell))
      if out.sites[addr] == nil { out.sites[addr] = function.site }
    }
    out.patches[i].state = .enabled
    out.patches[i].enableSeq = out.nextSeq
    out.nextSeq += 1
  }

  private func pop(at i: Int, from out: inout Outcome) {
    let patchID = out.patches[i].id
    for function in out.patches[i].functions {
      let addr = function.site.oldAddr
      guard var stack = out.stacks[addr] else { continue }
      stack.removeAll { $0.patch == patchID }
      out.stacks[addr] = stack.isEmpty ? nil : stack
    }
    out.patches[i].state = .disabled
  }

  /// The minimal effects turning the current hooks into `outcome`'s stacks, with a human line each.
  func effects(to outcome: Outcome) -> (effects: [Effect], steps: [String]) {
    var installs: [(Effect, String)] = []
    var sets: [(Effect, String)] = []
    var removes: [(Effect, String)] = []
    func describe(_ e: StackEntry) -> String { "\(e.patch) \(e.replacement) \(hexAddress(e.address))" }
    for addr in Set(hooks.keys).union(outcome.stacks.keys).sorted() {
      let old = hooks[addr]
      let newTop = outcome.stacks[addr]?.last
      switch (old, newTop) {
      case (nil, let top?):
        let site = outcome.sites[addr]!
        installs.append(
          (
            .installHook(site: site, target: top.address),
            "hook \(site.name) (\(site.object) \(hexAddress(addr))) -> \(describe(top))"
          ))
      case (let hook?, let top?):
        guard let from = hook.active, from.address != top.address else { continue }
        sets.append(
          (
            .setSlot(oldAddr: addr, cellAddr: hook.install.cellAddr, from: from.address, to: top.address),
            "retarget \(hook.site.name) \(hexAddress(addr)): \(describe(from)) -> \(describe(top))"
          ))
      case (let hook?, nil):
        let was = hook.active.map { " (was \(describe($0)))" } ?? ""
        removes.append(
          (
            .removeHook(oldAddr: addr, install: hook.install),
            "unhook \(hook.site.name) \(hexAddress(addr)): restore original bytes\(was)"
          ))
      case (nil, nil):
        continue
      }
    }
    // Every `prev` cell of a stack that changes is written again in the same stop, so
    // each replacement calls the version now below it (the original at the bottom).
    var prevs: [(Effect, String)] = []
    for (addr, stack) in outcome.stacks.sorted(by: { $0.key < $1.key }) where hooks[addr]?.stack != stack {
      for (i, entry) in stack.enumerated() {
        guard let cell = entry.prevCell else { continue }
        let below: PrevTarget = i == 0 ? .original : .replacement(stack[i - 1].address)
        prevs.append(
          (
            .setPrev(oldAddr: addr, cell: cell, to: below),
            "prev of \(describe(entry)) -> \(i == 0 ? "the original" : describe(stack[i - 1]))"
          ))
      }
    }
    let all = installs + sets + removes + prevs
    return (all.map(\.0), all.map(\.1))
  }
}
