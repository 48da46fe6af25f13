// swift-tools-version:6.0
import PackageDescription

let package = Package(
  name: "swpatch",
  platforms: [.macOS(.v13)],
  products: [
    .executable(name: "swpatch", targets: ["swpatch"])
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
    .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
  ],
  targets: [
    // C interop: libelf + libdw, imported as a system library.
    .systemLibrary(name: "CElfDw", pkgConfig: "libdw", providers: [.apt(["libelf-dev", "libdw-dev"])]),
    // C interop: OpenSSL's libcrypto, for the SHA-256 of patch libraries.
    .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
    // C interop: the Capstone disassembler, to find branches into bytes a jump overwrites.
    .systemLibrary(name: "CCapstone", pkgConfig: "capstone", providers: [.apt(["libcapstone-dev"])]),
    // C interop: what Swift cannot import (variadic ptrace, wait-status macros).
    .target(name: "CSwpatchShim"),
    // Process control: ptrace sessions on one thread, memory, remote syscalls and calls.
    .target(
      name: "SwpatchProcess",
      dependencies: ["CSwpatchShim", "SwpatchBase", .product(name: "SystemPackage", package: "swift-system")]),
    // Symbols: ELF symbol tables and load bias of the objects process control finds mapped.
    .target(name: "SwpatchSymbols", dependencies: ["CElfDw", "SwpatchProcess", "SwpatchBase"]),
    // x86-64 encoding of the jumps and trampoline slots; decoding of branches (Capstone).
    .target(name: "SwpatchX86", dependencies: ["CCapstone", "SwpatchBase"]),
    // The state directory and the socket's location: every path, and the two ways a
    // state file is written (replaced atomically, appended by the line).
    .target(
      name: "SwpatchState",
      dependencies: ["SwpatchBase", .product(name: "SystemPackage", package: "swift-system")]),
    // The bottom of every module: error codes (CodedError), the hex form of addresses
    // and bytes, and the few Glibc tools (locks, paths) that keep Foundation out.
    .target(name: "SwpatchBase"),
    // The wire protocol: requests, responses, reports, options and audit records, with
    // their JSON forms, shared by the daemon and the CLI. No I/O.
    .target(
      name: "SwpatchProtocol", dependencies: ["SwpatchBase", "SwpatchRegistry"]),
    // Pure logic: hooks, func stacks, policies, plans. No I/O.
    .target(name: "SwpatchRegistry", dependencies: ["SwpatchBase"]),
    // Executes a plan transactionally inside one stop of the target.
    .target(
      name: "SwpatchPatcher",
      dependencies: [
        "SwpatchBase", "SwpatchProcess", "SwpatchSymbols", "SwpatchX86", "SwpatchRegistry", "SwpatchState",
        "SwpatchProtocol", "CCrypto",
        .product(name: "SystemPackage", package: "swift-system"),
      ]),
    // The daemon: socket protocol, peer credentials, audit log, target watching; and the
    // client the CLI uses to reach it.
    .target(
      name: "SwpatchDaemon",
      dependencies: [
        "SwpatchBase", "SwpatchPatcher", "SwpatchRegistry", "SwpatchProcess", "SwpatchState",
        "SwpatchProtocol",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ]),
    // Thin command-line front end.
    .executableTarget(
      name: "swpatch",
      dependencies: [
        "SwpatchBase", "SwpatchDaemon", "SwpatchPatcher", "SwpatchRegistry", "SwpatchSymbols", "SwpatchState",
        "SwpatchProtocol", "SwpatchProcess",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    // `make bench`: swpatch against gdb and Frida (docs/benchmarks.md). Thin: it runs the
    // swpatch binary and times symbol look-ups in-process.
    .executableTarget(
      name: "swpatch-bench", dependencies: ["SwpatchSymbols", "SwpatchProcess", "SwpatchState"]),
    .testTarget(name: "SwpatchRegistryTests", dependencies: ["SwpatchRegistry", "SwpatchBase"]),
    .testTarget(name: "SwpatchX86Tests", dependencies: ["SwpatchX86"]),
    // Pure checks of process control and the patcher's values: no root, no fixtures.
    .testTarget(
      name: "SwpatchUnitTests",
      dependencies: [
        "SwpatchBase", "SwpatchProcess", "SwpatchPatcher", "SwpatchRegistry", "SwpatchSymbols",
        "SwpatchProtocol",
      ]),
    // The CLI's own rendering (text output of the wire types).
    // ... and its man pages and completions (ManualTests).
    .testTarget(
      name: "SwpatchCLITests",
      dependencies: [
        "swpatch", "SwpatchRegistry", .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    .testTarget(
      name: "SwpatchIntegrationTests",
      dependencies: [
        "SwpatchDaemon", "SwpatchPatcher", "SwpatchSymbols", "SwpatchProcess", "SwpatchProtocol",
      ]),
  ]
)
