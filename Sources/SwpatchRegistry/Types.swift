import SwpatchBase

/// Which patches may be disabled: only the top of every func stack, or any of them.
public enum DisablePolicy: String, Sendable, Codable, Equatable, CaseIterable {
  case stack
  case any
}

/// A process identity that survives pid reuse.
public struct TargetID: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
  public var pid: Int32
  /// Field 22 of /proc/PID/stat; a recycled pid gets a different start time.
  public var startTime: UInt64

  public init(pid: Int32, startTime: UInt64) {
    self.pid = pid
    self.startTime = startTime
  }

  public static func < (lhs: TargetID, rhs: TargetID) -> Bool {
    (lhs.pid, lhs.startTime) < (rhs.pid, rhs.startTime)
  }

  public var description: String { "pid \(pid)" }

  enum CodingKeys: String, CodingKey {
    case pid
    case startTime = "start_time"
  }
}

/// An original function in the target, identified by its runtime address.
public struct FunctionSite: Hashable, Sendable, Codable {
  public var name: String
  /// The object (executable or library) that defines it, as shown to users.
  public var object: String
  @Hex public var oldAddr: UInt64

  public init(name: String, object: String, oldAddr: UInt64) {
    self.name = name
    self.object = object
    self.oldAddr = oldAddr
  }

  enum CodingKeys: String, CodingKey {
    case name, object
    case oldAddr = "old_addr"
  }
}

/// One function a patch replaces, with where its replacement was loaded.
public struct PatchFunction: Hashable, Sendable, Codable {
  public var site: FunctionSite
  public var replacement: String
  @Hex public var replacementAddr: UInt64
  /// Where the replacement's `prev` pointer lives in the target (a function-pointer
  /// variable of the library): swpatch keeps it pointing at the version directly below
  /// this one in the func stack, the original at the bottom. Nil without `prev`.
  @OptionalHex public var prevCell: UInt64?

  public init(site: FunctionSite, replacement: String, replacementAddr: UInt64, prevCell: UInt64? = nil) {
    self.site = site
    self.replacement = replacement
    self.replacementAddr = replacementAddr
    self.prevCell = prevCell
  }

  enum CodingKeys: String, CodingKey {
    case site, replacement
    case replacementAddr = "replacement_addr"
    case prevCell = "prev_cell"
  }
}

/// Whether a patch's replacements are currently on the func stacks.
public enum PatchState: String, Sendable, Codable, Equatable {
  case enabled
  case disabled
}

/// A patch applied to a target; it stays known (and its library loaded) while disabled.
public struct Patch: Equatable, Sendable, Codable {
  public var id: String
  /// Path of the shared object holding the replacements.
  public var library: String
  public var functions: [PatchFunction]
  /// Atomic replace: enabling it disables every other patch on the target.
  public var replace: Bool
  /// Ids of patches that must be enabled while this one is.
  public var requires: [String]
  public var state: PatchState
  /// Position in the order of enables; later enables sit higher on the stacks.
  public var enableSeq: UInt64
  /// SHA-256 of the library content that was loaded (nil in registries from before the
  /// content-addressed store).
  public var sha256: String?
  /// The patch file it was attached (or upgraded) from, as the client named it (nil in
  /// registries from before it was recorded).
  public var patchFile: String?

  public init(
    id: String, library: String, functions: [PatchFunction], replace: Bool = false,
    requires: [String] = [], state: PatchState = .enabled, enableSeq: UInt64 = 0,
    sha256: String? = nil, patchFile: String? = nil
  ) {
    self.sha256 = sha256
    self.patchFile = patchFile
    self.id = id
    self.library = library
    self.functions = functions
    self.replace = replace
    self.requires = requires
    self.state = state
    self.enableSeq = enableSeq
  }

  enum CodingKeys: String, CodingKey {
    case id, library, functions, replace, requires, state, sha256
    case enableSeq = "enable_seq"
    case patchFile = "patch_file"
  }
}

/// What the patcher did to install a hook, kept so the hook can be removed exactly.
public struct HookInstall: Hashable, Sendable, Codable {
  /// The trampoline slot (`jmp [rip+disp]`) the entry jumps to.
  @Hex public var slotAddr: UInt64
  /// The 8-byte pointer cell the slot jumps through; retargeting is one store here.
  @Hex public var cellAddr: UInt64
  /// Where the jump was written; oldAddr+4 when the function starts with endbr64.
  @Hex public var entryAddr: UInt64
  @HexBytes public var originalBytes: [UInt8]
  @HexBytes public var jumpBytes: [UInt8]
  /// Where the instructions the jump overwrote run, relocated (`Relocator`), followed by
  /// a jump back into the function; nil when they could not be moved (or in registries
  /// written before). A thread stopped inside the overwritten bytes is moved there.
  @OptionalHex public var prologueAddr: UInt64?

  public init(
    slotAddr: UInt64, cellAddr: UInt64, entryAddr: UInt64, originalBytes: [UInt8], jumpBytes: [UInt8],
    prologueAddr: UInt64? = nil
  ) {
    self.slotAddr = slotAddr
    self.cellAddr = cellAddr
    self.entryAddr = entryAddr
    self.originalBytes = originalBytes
    self.jumpBytes = jumpBytes
    self.prologueAddr = prologueAddr
  }

  enum CodingKeys: String, CodingKey {
    case slotAddr = "slot_addr"
    case cellAddr = "cell_addr"
    case entryAddr = "entry_addr"
    case originalBytes = "original_bytes"
    case jumpBytes = "jump_bytes"
    case prologueAddr = "prologue_addr"
  }
}

/// One replacement on a hook's func stack.
public struct StackEntry: Hashable, Sendable, Codable {
  public var patch: String
  public var replacement: String
  @Hex public var address: UInt64
  /// The replacement's `prev` cell (see `PatchFunction.prevCell`).
  @OptionalHex public var prevCell: UInt64?
  /// In status only: what the `prev` cell points to now, `original` or an address.
  public var prev: String?

  public init(patch: String, replacement: String, address: UInt64, prevCell: UInt64? = nil) {
    self.patch = patch
    self.replacement = replacement
    self.address = address
    self.prevCell = prevCell
  }

  enum CodingKeys: String, CodingKey {
    case patch, replacement, address, prev
    case prevCell = "prev_cell"
  }
}

/// The single redirection of one original function, shared by every patch that replaces it.
public struct Hook: Equatable, Sendable, Codable {
  public var site: FunctionSite
  public var install: HookInstall
  /// Bottom first; the last entry is active. Never empty while the hook exists.
  public var stack: [StackEntry]

  public init(site: FunctionSite, install: HookInstall, stack: [StackEntry]) {
    self.site = site
    self.install = install
    self.stack = stack
  }

  public var topFirst: [StackEntry] { stack.reversed() }
  public var active: StackEntry? { stack.last }

  enum CodingKeys: String, CodingKey {
    case site, install
    // Named so nobody reading the state file mistakes it for the top-first status order.
    case stack = "stack_bottom_first"
  }
}

/// Memory the patcher mapped in the target for trampoline slots.
public struct TrampolinePage: Hashable, Sendable, Codable {
  @Hex public var base: UInt64
  @Hex public var size: UInt64

  public init(base: UInt64, size: UInt64) {
    self.base = base
    self.size = size
  }

  enum CodingKeys: String, CodingKey { case base, size }
}

/// A patch library dlopen'ed into the target.
public struct LoadedLibrary: Hashable, Sendable, Codable {
  public var path: String
  /// The dlopen handle in the target, needed to dlclose it later.
  @Hex public var handle: UInt64
  public var sha256: String?

  public init(path: String, handle: UInt64, sha256: String? = nil) {
    self.path = path
    self.handle = handle
    self.sha256 = sha256
  }

  enum CodingKeys: String, CodingKey { case path, handle, sha256 }
}
