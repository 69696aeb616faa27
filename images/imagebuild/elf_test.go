package imagebuild

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"strings"
)

// fakeELF returns a minimal x86-64 ELF file with the given e_type, an optional
// PT_INTERP program header, and (if modinfo is non-nil) a .modinfo section
// holding the NUL-terminated key=value strings, as in a kernel module.
func fakeELF(typ elf.Type, interp string, modinfo []string) []byte {
	var body bytes.Buffer // everything after the ELF header and program headers
	var phdrs []elf.Prog64
	nph := 0
	if interp != "" {
		nph = 1
	}
	base := uint64(64 + 56*nph)
	if interp != "" {
		off := base + uint64(body.Len())
		body.WriteString(interp + "\x00")
		phdrs = append(phdrs, elf.Prog64{Type: uint32(elf.PT_INTERP), Off: off, Filesz: uint64(len(interp) + 1), Memsz: uint64(len(interp) + 1), Align: 1})
	}
	var shdrs []elf.Section64
	shdrs = append(shdrs, elf.Section64{}) // SHN_UNDEF
	shstr := "\x00.shstrtab\x00"
	if modinfo != nil {
		off := base + uint64(body.Len())
		data := strings.Join(modinfo, "\x00") + "\x00"
		body.WriteString(data)
		shdrs = append(shdrs, elf.Section64{Name: uint32(len(shstr)), Type: uint32(elf.SHT_PROGBITS), Off: off, Size: uint64(len(data)), Addralign: 1})
		shstr += ".modinfo\x00"
	}
	strOff := base + uint64(body.Len())
	body.WriteString(shstr)
	shdrs = append(shdrs, elf.Section64{Name: 1, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstr)), Addralign: 1})
	for body.Len()%8 != 0 {
		body.WriteByte(0)
	}
	shoff := base + uint64(body.Len())

	var h elf.Header64
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	h.Type = uint16(typ)
	h.Machine = uint16(elf.EM_X86_64)
	h.Version = uint32(elf.EV_CURRENT)
	h.Ehsize = 64
	h.Phentsize = 56
	h.Shentsize = 64
	if nph > 0 {
		h.Phoff = 64
		h.Phnum = uint16(nph)
	}
	h.Shoff = shoff
	h.Shnum = uint16(len(shdrs))
	h.Shstrndx = uint16(len(shdrs) - 1)

	var out bytes.Buffer
	must(binary.Write(&out, binary.LittleEndian, &h))
	for i := range phdrs {
		must(binary.Write(&out, binary.LittleEndian, &phdrs[i]))
	}
	out.Write(body.Bytes())
	for i := range shdrs {
		must(binary.Write(&out, binary.LittleEndian, &shdrs[i]))
	}
	return out.Bytes()
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// fakeModule is a kernel-module-like ELF (ET_REL) with a .modinfo section.
func fakeModule(name, release string, deps []string) []byte {
	return fakeELF(elf.ET_REL, "", []string{
		"license=GPL",
		"depends=" + strings.Join(deps, ","),
		"name=" + name,
		"vermagic=" + release + " SMP preempt mod_unload modversions ",
	})
}
