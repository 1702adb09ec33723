/* tests/tools: looks like a Go binary to resil-run (a .go.buildinfo
 * section, as the Go linker writes), without needing a Go toolchain. */
__attribute__((used, section(".go.buildinfo"))) static const char
    buildinfo[32] = "\xff Go buildinf:";

int main(void)
{
    return 0;
}
