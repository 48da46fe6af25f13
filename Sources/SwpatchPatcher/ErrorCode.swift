import SwpatchProcess
import SwpatchRegistry
import SwpatchSymbols

/// A stable machine-readable code for any error the engine throws (the `code` field of
/// `--json` errors, documented in docs/cli.md).
public func errorCode(_ error: any Error) -> String {
  switch error {
  case let e as RegistryError: return e.code
  case is PatchFileError: return "bad_patch_file"
  case is StoreError: return "state_dir"
  case let e as ProcessError:
    switch e {
    case .noSuchProcess: return "no_such_process"
    case .kernelThread: return "kernel_thread"
    case .alreadyTraced: return "already_traced"
    case .permissionDenied: return "permission_denied"
    case .processExited: return "process_exited"
    case .remoteCallTimedOut: return "remote_call_timeout"
    case .remoteCallFaulted: return "remote_call_fault"
    default: return "process_control"
    }
  case let e as SymbolError:
    switch e {
    case .processGone: return "no_such_process"
    case .badLibrary, .cannotOpen: return "bad_library"
    case .notFound, .notInLibrary: return "symbol_not_found"
    case .objectNotLoaded: return "object_not_loaded"
    case .ambiguous, .ambiguousAcrossObjects, .symposOutOfRange: return "ambiguous_symbol"
    case .notAFunction: return "not_a_function"
    case .unwindFailed: return "stack_unwind_failed"
    }
  case let e as PatchError:
    switch e {
    case .libraryMissing, .libraryUnusable: return "bad_library"
    case .tooShort: return "function_too_short"
    case .noMemoryNearby, .mmapFailed: return "no_memory"
    case .noLoader, .dlopenFailed: return "load_failed"
    case .drift: return "drift"
    case .notPatched: return "not_patched"
    case .threadInRewrittenBytes: return "thread_in_rewritten_bytes"
    case .buildIDMismatch: return "build_id_mismatch"
    case .ifunc: return "ifunc"
    case .libraryStore: return "state_dir"
    case .signatureMismatch: return "signature_mismatch"
    case .branchIntoEntry: return "branch_into_entry"
    case .stackCheckTimedOut: return "stack_check_timeout"
    case .unknownFunctionSize: return "unknown_function_size"
    }
  default: return "error"
  }
}
