import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchRegistry

/// When a switch from one version of a function to another may happen.
public enum Consistency: String, Codable, Sendable, CaseIterable {
  /// Only when no thread has a frame inside a version being switched away from (every
  /// thread unwound in the stop); otherwise resume, wait and try again.
  case stack
  /// At once: calls already in flight finish in the old version, new calls reach the new
  /// one (function-level consistency). Only the bytes-in-flight check applies.
  case entry
}

/// The result of one attach, enable or disable, for humans and for `--json`.
public struct OperationReport: Codable, Sendable {
  /// One redirected (or restored) function.
  public struct FunctionLine: Codable, Sendable {
    public var function: String
    public var object: String
    public var oldAddr: Address
    public var replacement: String
    public var address: Address

    public init(function: String, object: String, oldAddr: Address, replacement: String, address: Address) {
      self.function = function
      self.object = object
      self.oldAddr = oldAddr
      self.replacement = replacement
      self.address = address
    }

    enum CodingKeys: String, CodingKey {
      case function, object, replacement, address
      case oldAddr = "old_addr"
    }
  }
  /// Where one undefined symbol of an attach's library binds in the target.
  public struct ExternLine: Codable, Sendable, Equatable {
    /// `loader` (the target's dynamic loader finds it), `swpatch` (a function or
    /// variable the loader cannot find, bound by swpatch) or `nowhere` (a weak symbol
    /// nothing defines: NULL).
    public var bindsTo: String
    public var name: String
    /// The object it binds into, when known.
    public var object: String?
    /// Its address in the target, for what swpatch binds.
    public var address: Address?

    public init(name: String, bindsTo: String, object: String?, address: Address?) {
      self.name = name
      self.bindsTo = bindsTo
      self.object = object
      self.address = address
    }

    enum CodingKeys: String, CodingKey {
      case name, object, address
      case bindsTo = "binds_to"
    }
  }

  public var pid: Int32
  public var operation: String
  public var patch: String
  public var dryRun: Bool
  public var policy: String
  public var functions: [FunctionLine]
  public var plan: [String]
  /// Patches that an atomic-replace patch disabled in the same stop.
  public var alsoDisabled: [String]
  public var stoppedMicroseconds: Int64
  public var notes: [String]
  /// `stack` or `entry`: how the switch was timed.
  public var consistency: String = Consistency.stack.rawValue
  /// How many times the target was resumed and stopped again because a thread was
  /// inside a function being switched away from.
  public var retries: Int = 0
  /// How many threads were found stopped inside bytes being rewritten (or inside a
  /// relocated prologue being freed) and moved, instead of being waited for.
  public var threadsMoved: Int = 0
  /// Under `stack`: how many threads were inside what was switched away from and switched
  /// on their own, when their frame returned (the per-thread transition).
  public var threadsCaught: Int = 0
  /// How long the per-thread transition ran, from the first resume to the end of the
  /// last stop; 0 when the switch happened in one stop.
  public var transitionMicroseconds: Int64 = 0
  /// An attach's library: every undefined symbol and where it binds (empty otherwise).
  public var externs: [ExternLine] = []

  public init(
    pid: Int32, operation: String, patch: String, dryRun: Bool, policy: String, functions: [FunctionLine],
    plan: [String], alsoDisabled: [String], stoppedMicroseconds: Int64, notes: [String]
  ) {
    self.pid = pid
    self.operation = operation
    self.patch = patch
    self.dryRun = dryRun
    self.policy = policy
    self.functions = functions
    self.plan = plan
    self.alsoDisabled = alsoDisabled
    self.stoppedMicroseconds = stoppedMicroseconds
    self.notes = notes
  }

  enum CodingKeys: String, CodingKey {
    case pid, operation, patch, policy, functions, plan, notes, consistency, retries, externs
    case threadsMoved = "threads_moved"
    case threadsCaught = "threads_caught"
    case transitionMicroseconds = "transition_us"
    case dryRun = "dry_run"
    case alsoDisabled = "also_disabled"
    case stoppedMicroseconds = "stopped_us"
  }
}

/// How one attach, enable or disable is carried out. Codable: the daemon's protocol
/// carries it as the request's `options` object, so a new option needs no protocol change.
public struct OperationOptions: Codable, Sendable, Equatable {
  /// Plan and report only; the target is not touched.
  public var dryRun: Bool
  /// Bound, in seconds, on a remote call (dlopen) in the target.
  public var loadTimeout: Double
  /// Patch even when the DWARF prototypes of `old` and `new` differ (the report notes it).
  public var force: Bool
  /// When a switch may happen: `stack` (no thread inside what is switched away from)
  /// or `entry` (at once).
  public var consistency: Consistency
  /// Bound, in seconds, on waiting (with retries) for threads to leave under `stack`.
  public var retryFor: Double
  /// Load a library that runs code when loaded (constructors); refused otherwise.
  public var allowConstructors: Bool = false
  /// attach: put the new build in place of a known patch of the same id (nil, left out
  /// of the JSON, when not asked).
  public var upgrade: Bool?

  public init(
    dryRun: Bool = false, loadTimeout: Double = 5, force: Bool = false,
    consistency: Consistency = .stack, retryFor: Double = 5
  ) {
    self.dryRun = dryRun
    self.loadTimeout = loadTimeout
    self.force = force
    self.consistency = consistency
    self.retryFor = retryFor
  }

  enum CodingKeys: String, CodingKey {
    case consistency
    case dryRun = "dry_run"
    case loadTimeout = "load_timeout"
    case force
    case retryFor = "retry_for"
    case allowConstructors = "allow_constructors"
    case upgrade
  }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    dryRun = try c.decodeIfPresent(Bool.self, forKey: .dryRun) ?? false
    loadTimeout = try c.decodeIfPresent(Double.self, forKey: .loadTimeout) ?? 5
    force = try c.decodeIfPresent(Bool.self, forKey: .force) ?? false
    consistency = try c.decodeIfPresent(Consistency.self, forKey: .consistency) ?? .stack
    retryFor = try c.decodeIfPresent(Double.self, forKey: .retryFor) ?? 5
    allowConstructors = try c.decodeIfPresent(Bool.self, forKey: .allowConstructors) ?? false
    upgrade = try c.decodeIfPresent(Bool.self, forKey: .upgrade)
    // A request line is anyone's input: the CLI's bounds hold here too, so no value
    // (1e300, a negative) reaches a conversion that would trap and take the daemon down.
    guard Self.loadTimeoutRange.contains(loadTimeout), loadTimeout > 0 else {
      throw DecodingError.dataCorruptedError(
        forKey: .loadTimeout, in: c,
        debugDescription: "must be a number of seconds above 0 and at most \(Int(Self.maxSeconds))")
    }
    guard Self.retryForRange.contains(retryFor) else {
      throw DecodingError.dataCorruptedError(
        forKey: .retryFor, in: c,
        debugDescription: "must be a number of seconds from 0 to \(Int(Self.maxSeconds))")
    }
  }

  /// The longest `load_timeout` and `retry_for`, in seconds (the CLI's bound too).
  public static let maxSeconds = 600.0
  public static let loadTimeoutRange = 0.0...maxSeconds
  public static let retryForRange = 0.0...maxSeconds

  /// Checked even though decoding bounds `loadTimeout`: a caller of the library API may
  /// set any Double, and a trap here would kill the daemon.
  public var callTimeout: Duration {
    let milliseconds = (loadTimeout * 1000).rounded()
    guard milliseconds.isFinite, milliseconds >= 1 else { return .milliseconds(1) }
    return .milliseconds(Int64(exactly: min(milliseconds, Self.maxSeconds * 1000)) ?? 5000)
  }
}

extension OperationOptions {
  /// `retryFor` as a duration the loop can use whatever a request carried: the CLI
  /// refuses values outside 0...600 s, and the engine must not trap on one that got
  /// through another front end (a negative or non-finite value means one attempt).
  public var retryBound: Duration {
    guard retryFor.isFinite, retryFor > 0 else { return .zero }
    return .milliseconds(Int64(min(retryFor, 600) * 1000))
  }

  /// Seconds in `text`: `5s`, `500ms`, `1m`, or a plain number of seconds (`2.5`); nil
  /// when it is none of those, negative or not finite.
  public static func seconds(parsing text: String) -> Double? {
    let trimmed = text.trimmed(newlines: false)
    let units: [(suffix: String, scale: Double)] = [("ms", 0.001), ("s", 1), ("m", 60)]
    var number = Substring(trimmed)
    var scale = 1.0
    for unit in units where trimmed.hasSuffix(unit.suffix) {
      number = trimmed.dropLast(unit.suffix.count)
      scale = unit.scale
      break
    }
    guard !number.isEmpty, number.allSatisfy({ $0.isNumber || $0 == "." }), let value = Double(number),
      value.isFinite, value >= 0
    else { return nil }
    return value * scale
  }
}
