import CSwpatchShim
import Glibc

/// What the kernel says about the process at the other end of a Unix socket
/// (`SO_PEERCRED`), in the layout the kernel writes (`struct ucred`, which shim.c checks
/// against glibc's): the daemon reads it through its socket library without importing
/// the C shim.
public struct KernelPeerCredentials: Sendable {
  public var pid: Int32 = 0
  public var uid: UInt32 = 0
  public var gid: UInt32 = 0

  public init() {}

  /// The `getsockopt` level and option that fill one.
  public static let level = Int32(SOL_SOCKET)
  public static let option = Int32(SWP_SO_PEERCRED)
  /// Whether this struct has the shim's `struct ucred` layout (a test checks it).
  public static let matchesKernelLayout =
    MemoryLayout<KernelPeerCredentials>.size == MemoryLayout<swp_ucred>.size
    && MemoryLayout<KernelPeerCredentials>.offset(of: \.gid) == 8
}
