using OnnxAlign.ModelForge;

// Writes the toy models (DESIGN §1 ground truth) under the given folder, by default models/toy of the repository.
string root = args.Length > 0 ? args[0] : Path.Combine(FindRepositoryRoot(), "models", "toy");
foreach (var file in ToyModels.WriteAll(root))
    Console.WriteLine($"wrote {Path.GetRelativePath(Environment.CurrentDirectory, file)} ({new FileInfo(file).Length} bytes)");
return 0;

static string FindRepositoryRoot()
{
    for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir is not null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "OnnxAlign.sln"))) return dir.FullName;
    throw new InvalidOperationException("run from inside the repository, or pass the output folder");
}
