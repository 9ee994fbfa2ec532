/**
 * Path rules shared by extraction and packing: what an entry may be called and
 * where a symlink may point. Both work on POSIX relative paths ('a/b/c').
 */

/** Why `name` (an entry path, trailing '/' already removed) is unsafe, or null. */
export function unsafeEntryName(name: string): string | null {
  if (name.includes('\0')) return 'its name contains a NUL byte';
  if (name.startsWith('/')) return 'its path is absolute';
  if (name.includes('\\')) return 'its name contains a backslash';
  if (/^[a-zA-Z]:/.test(name)) return 'its name starts with a drive letter';
  for (const segment of name.split('/')) {
    if (segment === '..') return "its path contains '..'";
    if (segment === '' || segment === '.') return "its path has an empty or '.' segment";
  }
  return null;
}

/**
 * Why the symlink at `linkPath` pointing to `target` could resolve outside the
 * root, or null. Lexical normalisation is not enough: with `s -> .`, the target
 * `s/x/../..` normalises to `.` but resolves to the root's parent, because '..'
 * after a symlink climbs from where the symlink points. So every '..' must come
 * before every name, and there may be no more of them than the link's depth;
 * names that are themselves symlinks obey the same rule, so any chain stays inside.
 */
export function escapingSymlink(linkPath: string, target: string): string | null {
  if (target === '') return 'its target is empty';
  if (target.includes('\0')) return 'its target contains a NUL byte';
  if (target.startsWith('/')) return `its target ${target} is absolute`;
  if (target.includes('\\')) return `its target ${target} contains a backslash`;
  const depth = linkPath.split('/').length - 1;
  let ups = 0;
  let descended = false;
  for (const segment of target.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment !== '..') descended = true;
    else if (descended) return `its target ${target} has '..' after a name`;
    else if (++ups > depth) return `its target ${target} points outside the archive`;
  }
  return null;
}
