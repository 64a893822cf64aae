import { type CheckReport, type DiskInfo, formatSize } from '@hyperfarm/vhd';

/** Human-readable renderings for `hyperfarm vhd`; `-o json` prints the objects instead. */

export function renderInfo(info: DiskInfo, parents: DiskInfo[]): string {
  const lines = [
    `path:            ${info.path}`,
    `type:            ${info.type}`,
    `virtual size:    ${formatSize(info.virtualSize)} (${info.virtualSize} bytes)`,
    `allocated size:  ${formatSize(info.allocatedSize)} (${info.allocatedSize} bytes)`,
    `file size:       ${formatSize(info.fileSize)} (${info.fileSize} bytes)`,
  ];
  if (info.blockSize !== undefined) {
    lines.push(`block size:      ${formatSize(info.blockSize)}`);
    lines.push(`blocks:          ${info.allocatedBlocks} of ${info.totalBlocks} allocated`);
  }
  lines.push(`unique id:       ${info.uniqueId}`);
  lines.push(`created:         ${info.createdAt} by "${info.creatorApplication}"`);
  const g = info.geometry;
  lines.push(`geometry (CHS):  ${g.cylinders}/${g.heads}/${g.sectorsPerTrack}`);
  if (info.footerSource === 'copy') lines.push('footer:          recovered from the copy at offset 0');
  if (parents.length === 0) {
    lines.push('parent chain:    (none)');
  } else {
    lines.push('parent chain:');
    for (const p of parents) lines.push(`  ${p.path} (${p.type}, ${p.uniqueId})`);
  }
  return lines.join('\n') + '\n';
}

export function renderCheck(report: CheckReport): string {
  if (report.ok) return `${report.path}: no problems found\n`;
  const lines = report.issues.map(
    (i) => `${i.fatal ? 'error' : 'warning'}: ${i.structure} at offset ${i.offset}: ${i.message}`,
  );
  lines.push(`${report.path}: ${report.issues.length} problem${report.issues.length === 1 ? '' : 's'} found`);
  return lines.join('\n') + '\n';
}
