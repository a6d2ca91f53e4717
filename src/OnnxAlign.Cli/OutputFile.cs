namespace OnnxAlign.Cli;

/// <summary>The one check of a single-file output (plan's plan, bench's and quality's JSON, --plot's PNG), before any work.</summary>
internal static class OutputFile
{
    /// <summary>
    /// Refuses a path that is a folder, exists without <paramref name="overwrite"/>, or lies in no folder, naming
    /// <paramref name="flag"/>: found before the run, not after it (bad input writes nothing).
    /// </summary>
    public static void Check(string path, bool overwrite, string example, string flag = "--out")
    {
        if (path.Length == 0) throw new UsageException($"{flag}: expected a file path");
        if (Directory.Exists(path)) throw new UsageException($"{flag} {path}: is a folder; this writes one file (e.g. {flag} {Path.Combine(path, example)})");
        if (File.Exists(path) && !overwrite) throw new UsageException($"{flag} {path}: exists; pass --overwrite to replace it");
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is null || !Directory.Exists(folder)) throw new UsageException($"{flag} {path}: its folder does not exist");
    }
}
