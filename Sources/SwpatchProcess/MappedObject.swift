import Glibc

/// One file mapped into a process: every mapping of one device and inode, and a path
/// that opens the very file that is mapped. The symbols module opens it; only process
/// control knows where in /proc that is.
public struct MappedObject: Sendable {
  /// The mappings of the file, in the order of /proc/PID/maps.
  public let mappings: [MapEntry]
  /// /proc/PID/map_files/..., which opens the mapped file even if it was deleted or
  /// replaced on disk since, else /proc/PID/root/PATH (the target's mount namespace).
  public let openPath: String
  /// Whether this is the file /proc/PID/exe names (compared by inode).
  public let isMainExecutable: Bool

  /// The lowest mapping, whose offset and address give the load bias.
  public var first: MapEntry { mappings.min { $0.start < $1.start }! }
  /// The path the kernel shows in maps (may end in " (deleted)").
  public var path: String { first.path }
  /// `path` without the " (deleted)" the kernel adds.
  public var cleanPath: String { Self.withoutDeletedMark(path) }

  static func withoutDeletedMark(_ path: String) -> String {
    path.hasSuffix(" (deleted)") ? String(path.dropLast(10)) : path
  }
}

extension TargetProcess {
  /// The file-backed mappings of `pid` grouped by file, in the order each file first
  /// appears in /proc/PID/maps; and the prefix under which the target's own files are
  /// visible (/proc/PID/root), for files it names by path (debug links).
  public static func mappedObjects(of pid: Int32) throws(ProcessError)
    -> (objects: [MappedObject], fileSystem: String)
  {
    let maps = try ProcessMaps.read(pid: pid)
    let directory = Self.directory(of: pid)
    var exeInode: UInt64 = 0
    var info = stat()
    if stat(directory + "/exe", &info) == 0 { exeInode = UInt64(info.st_ino) }
    var order: [String] = []
    var groups: [String: [MapEntry]] = [:]
    for entry in maps where entry.isFileBacked {
      let key = "\(entry.device):\(entry.inode)"
      if groups[key] == nil { order.append(key) }
      groups[key, default: []].append(entry)
    }
    let objects = order.map { key in
      let mappings = groups[key]!
      let first = mappings.min { $0.start < $1.start }!
      let mapFiles = directory + "/map_files/\(first.mapFilesName)"
      let clean = MappedObject.withoutDeletedMark(first.path)
      let openPath = access(mapFiles, R_OK) == 0 ? mapFiles : directory + "/root\(clean)"
      return MappedObject(mappings: mappings, openPath: openPath, isMainExecutable: first.inode == exeInode)
    }
    return (objects, directory + "/root")
  }
}

extension TargetProcess {
  /// The device and inode of the file `path` names in `pid`'s mount namespace (through
  /// /proc/PID/root, so a symlink resolves as the target would resolve it); nil when
  /// there is no such file.
  public static func identity(ofPath path: String, seenBy pid: Int32) -> FileIdentity? {
    FileIdentity.of(path: directory(of: pid) + "/root" + path)
  }
}
