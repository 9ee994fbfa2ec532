/** An entry as envd reports it (EntryInfo): Go's permission string, a symlink with its target's type, the metadata. */
import path from 'node:path';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { FileEntry, FileType as GuestFileType } from '../../agent/index.js';
import { FileType, type EntryInfoSchema } from './gen/filesystem_pb.js';

export type EntryInit = MessageInitShape<typeof EntryInfoSchema>;

const S_IFMT = 0o170000;
/** Go's os.FileMode type letters, by st_mode type bits. */
const TYPE_LETTER: Record<number, string> = { 0o040000: 'd', 0o120000: 'L', 0o010000: 'p', 0o140000: 'S', 0o060000: 'D', 0o020000: 'Dc' };

/** `mode` as Go's FileMode.String() prints it: -rw-r--r--, drwxr-xr-x, Lrwxrwxrwx, ugtrwx... */
export function goPermissions(mode: number): string {
  let s = TYPE_LETTER[mode & S_IFMT] ?? '';
  if (mode & 0o4000) s += 'u';
  if (mode & 0o2000) s += 'g';
  if (mode & 0o1000) s += 't';
  if (!s) s = '-';
  const rwx = 'rwxrwxrwx';
  for (let i = 0; i < 9; i++) s += mode & (1 << (8 - i)) ? rwx[i] : '-';
  return s;
}

function fileType(t: GuestFileType | undefined): FileType {
  return t === 'file' ? FileType.FILE : t === 'directory' ? FileType.DIRECTORY : FileType.UNSPECIFIED;
}

/** An entry as envd reports it: a symlink has its target's type; mode is the permission bits. */
export function entryInfo(e: FileEntry, p: string): EntryInit {
  return {
    name: path.posix.basename(p),
    path: p,
    type: fileType(e.type === 'symlink' ? e.targetType : e.type),
    size: BigInt(e.size),
    mode: e.mode & 0o777,
    permissions: goPermissions(e.mode),
    owner: e.owner ?? String(e.uid),
    group: e.group ?? String(e.gid),
    modifiedTime: timestampFromMs(Math.trunc(e.mtimeMs)),
    ...(e.symlinkTarget !== undefined && { symlinkTarget: e.symlinkTarget }),
    metadata: e.metadata,
  };
}
