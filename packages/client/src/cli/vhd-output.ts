import { type CheckReport, type DiskInfo, type MergeProgress, formatSize } from '@hyperfarm/vhd';

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

/** One progress line of a merge, e.g. "merging into the child: 12/40 blocks (30%), 24.0 MiB of 80.0 MiB". */
export function renderMergeProgress(p: MergeProgress): string {
  if (p.phase === 'relink') return `merging into the ${p.direction}: re-linking`.padEnd(72);
  if (p.phase === 'cleanup' || p.phase === 'done') return `merging into the ${p.direction}: done`.padEnd(72);
  const pct = p.bytesTotal > 0 ? Math.floor((100 * p.bytesDone) / p.bytesTotal) : 100;
  return (
    `merging into the ${p.direction}: ${p.blocksDone}/${p.blocksTotal} blocks (${pct}%), ` +
    `${formatSize(p.bytesDone)} of ${formatSize(p.bytesTotal)}`
  ).padEnd(72);
}
