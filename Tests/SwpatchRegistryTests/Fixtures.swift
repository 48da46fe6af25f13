import SwpatchRegistry

let tid = TargetID(pid: 4242, startTime: 81234)
let foo = FunctionSite(name: "foo", object: "app", oldAddr: 0x55d1_c0a0_1139)
let bar = FunctionSite(name: "bar", object: "app", oldAddr: 0x55d1_c0a0_1200)
let baz = FunctionSite(name: "baz", object: "libx.so", oldAddr: 0x7f11_0000_2000)

/// Distinct, predictable replacement addresses: one 64 KiB region per patch id.
func replacementAddr(_ id: String, _ site: FunctionSite) -> UInt64 {
  let region = id.utf8.reduce(UInt64(0)) { $0 &* 31 &+ UInt64($1) } & 0xffff
  return 0x7f00_0000_0000 + (region << 16) + (site.oldAddr & 0xfff)
}

func makePatch(
  _ id: String, _ sites: [FunctionSite], replace: Bool = false, requires: [String] = []
) -> Patch {
  Patch(
    id: id, library: "/tmp/\(id).so",
    functions: sites.map {
      PatchFunction(site: $0, replacement: "\($0.name)_\(id)", replacementAddr: replacementAddr(id, $0))
    },
    replace: replace, requires: requires)
}

func fakeInstall(_ oldAddr: UInt64) -> HookInstall {
  let slot = 0x7ff0_0000_0000 + (oldAddr & 0xffff) * 16
  return HookInstall(
    slotAddr: slot, cellAddr: slot + 8, entryAddr: oldAddr, originalBytes: [0x55, 0x48, 0x89, 0xe5, 0x90],
    jumpBytes: [0xe9, 0x01, 0x02, 0x03, 0x04])
}

/// Plays the patcher: executes nothing, reports a plausible install for every new hook.
func commit(_ state: TargetState, _ plan: Plan) throws -> TargetState {
  let installs = Dictionary(uniqueKeysWithValues: plan.newHooks.map { ($0, fakeInstall($0)) })
  return try state.committing(plan, installs: installs)
}

func attach(_ state: TargetState, _ patch: Patch) throws -> TargetState {
  try commit(state, state.planAttach(patch, policy: state.policy))
}

func enable(_ state: TargetState, _ id: String) throws -> TargetState {
  try commit(state, state.planEnable(id))
}

func disable(_ state: TargetState, _ id: String) throws -> TargetState {
  try commit(state, state.planDisable(id))
}

func fresh(_ policy: DisablePolicy) -> TargetState {
  TargetState.new(id: tid, executable: "/srv/app", policy: policy)
}

/// p1, p2, p3 each replace foo, enabled in that order.
func threeOnFoo(_ policy: DisablePolicy) throws -> TargetState {
  var state = fresh(policy)
  for id in ["p1", "p2", "p3"] { state = try attach(state, makePatch(id, [foo])) }
  return state
}

/// Patch ids on the stack of `site`, active first; empty when the function is not hooked.
func stackIDs(_ state: TargetState, _ site: FunctionSite) -> [String] {
  state.hook(at: site.oldAddr)?.topFirst.map(\.patch) ?? []
}

func refusal(_ body: () throws -> Plan) -> RegistryError? {
  do {
    _ = try body()
    return nil
  } catch let error as RegistryError {
    return error
  } catch {
    return nil
  }
}
