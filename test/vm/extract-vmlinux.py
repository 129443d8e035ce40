#!/usr/bin/env python3
"""extract-vmlinux.py BZIMAGE OUT: decompresses an x86 bzImage's payload to an ELF vmlinux.

Used by run-in-vm.sh: QEMU boots an uncompressed vmlinux through its PVH entry point, which skips
the bzImage's self-decompression (several seconds under TCG). Exits non-zero (and writes nothing)
if the image is not a bzImage with an xz/gzip payload or the result has no PVH entry note.
"""
import gzip
import lzma
import os
import struct
import sys


def fail(msg):
    print(f"extract-vmlinux.py: {msg}", file=sys.stderr)
    sys.exit(1)


def payload(image):
    if image[0x202:0x206] != b"HdrS":
        fail("not a bzImage (no HdrS)")
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return image[start:start + length]


def decompress(data):
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    if data.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=__import__("io").BytesIO(data)).read()
    fail("payload compression not supported (only xz and gzip)")


def has_pvh_note(elf):
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        fail("payload is not an ELF64 file")
    e_phoff, = struct.unpack_from("<Q", elf, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(e_phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, e_phoff + i * e_phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:  # XEN_ELFNOTE_PHYS32_ENTRY
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def main():
    if len(sys.argv) != 3:
        fail("usage: extract-vmlinux.py BZIMAGE OUT")
    with open(sys.argv[1], "rb") as f:
        image = f.read()
    elf = decompress(payload(image))
    if not has_pvh_note(elf):
        fail("vmlinux has no PVH entry note (kernel without CONFIG_PVH)")
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "wb") as f:
        f.write(elf)
    os.replace(tmp, sys.argv[2])


main()
