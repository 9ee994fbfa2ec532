import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildQemuArgs, guestCmdline, optValue } from './args.js';

const base = {
  name: 'vm-1',
  accel: 'tcg' as const,
  memoryMiB: 256,
  vcpus: 1,
  qmpSocket: '/d/qmp.sock',
  consoleLog: '/d/console.log',
};

test('template: boots a kernel on shared file-backed RAM', () => {
  assert.deepEqual(
    buildQemuArgs({
      ...base,
      memPath: '/i/mem',
      memShared: true,
      boot: { kernel: '/g/vmlinux', initrd: '/g/initrd.cpio', cmdline: 'console=ttyS0' },
      disk: '/i/disk.qcow2',
      ctlSocket: '/d/ctl.sock',
      logSocket: '/d/log.sock',
      tap: { ifname: 'tap0', mac: '52:54:00:ce:11:a0' },
      tcgTbSizeMiB: 32,
    }),
    // prettier-ignore
    [
      '-name', 'vm-1',
      '-M', 'microvm,pit=off,pic=off,isa-serial=on,rtc=on,memory-backend=mem',
      '-accel', 'tcg,tb-size=32',
      '-cpu', 'qemu64,+arat',
      '-m', '256M',
      '-smp', '1',
      '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
      '-object', 'memory-backend-file,id=mem,size=256M,mem-path=/i/mem,share=on',
      '-serial', 'file:/d/console.log',
      '-qmp', 'unix:/d/qmp.sock,server=on,wait=off',
      '-kernel', '/g/vmlinux', '-initrd', '/g/initrd.cpio', '-append', 'console=ttyS0',
      '-drive', 'id=root,file=/i/disk.qcow2,format=qcow2,if=none,cache=writeback,discard=unmap,auto-read-only=off',
      '-device', 'virtio-blk-device,drive=root',
      '-device', 'virtio-serial-device,max_ports=4',
      '-chardev', 'socket,id=ctl,path=/d/ctl.sock,server=on,wait=off',
      '-device', 'virtserialport,chardev=ctl,name=cella.ctl',
      '-chardev', 'socket,id=log,path=/d/log.sock,server=on,wait=off',
      '-device', 'virtserialport,chardev=log,name=cella.log',
      '-netdev', 'tap,id=net0,ifname=tap0,script=no,downscript=no',
      '-device', 'virtio-net-device,netdev=net0,mac=52:54:00:ce:11:a0',
    ],
  );
});

test('clone: private RAM, no kernel, waits for incoming state', () => {
  const args = buildQemuArgs({ ...base, accel: 'kvm', memPath: '/i/mem', memShared: false, incoming: true });
  assert.ok(args.includes('memory-backend-file,id=mem,size=256M,mem-path=/i/mem,share=off'));
  assert.ok(!args.includes('-kernel'));
  assert.deepEqual(args.slice(-3), ['-incoming', 'defer', '-S']);
  assert.deepEqual(args.slice(args.indexOf('-accel'), args.indexOf('-accel') + 4), ['-accel', 'kvm', '-cpu', 'host']);
});

test('jailed: seccomp filter, own uid, chroot into the VM folder', () => {
  const args = buildQemuArgs({ ...base, memPath: '/i/mem', memShared: false, incoming: true, jail: { uid: 200007, gid: 200007, chroot: '/d' } });
  // prettier-ignore
  assert.deepEqual(args.slice(-9), [
    '-incoming', 'defer', '-S',
    '-sandbox', 'on,obsolete=deny,spawn=deny,resourcecontrol=deny',
    '-runas', '200007:200007',
    '-chroot', '/d',
  ]);
  const builder = buildQemuArgs({ ...base, memPath: '/i/mem', memShared: false, jail: { uid: 300001, gid: 300001 } });
  assert.ok(!builder.includes('-chroot') && builder.includes('300001:300001'));
});

test('option values double their commas so a path cannot inject options', () => {
  assert.equal(optValue('/a,share=on/b'), '/a,,share=on/b');
  const args = buildQemuArgs({ ...base, memPath: '/x,share=on', memShared: false });
  assert.ok(args.includes('memory-backend-file,id=mem,size=256M,mem-path=/x,,share=on,share=off'));
});

test('guest command line carries the idle settings, the fixed address and the TSC rate', () => {
  assert.equal(
    guestCmdline({ tscKhz: 2445414, guestCidr: '172.29.0.2/24', gateway: '172.29.0.1' }),
    'console=ttyS0 quiet panic=-1 reboot=t tsc=reliable sysctl.vm.compaction_proactiveness=0 psi=0 nowatchdog ' +
      'cella.ip=172.29.0.2/24 cella.gw=172.29.0.1 tsc_early_khz=2445414',
  );
});
