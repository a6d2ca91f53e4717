using System.Diagnostics;

namespace OnnxAlign.Tests;

/// <summary>Issue #17: one live run per output folder, and an interrupt that stops between writes and says how to resume.</summary>
[Trait("Category", "Slow")]
public class FolderLockTests
{
    private static readonly string[] LongRun = ["--count", "256", "--batch", "4", "--steps", "1000", "--threads", "1"];

    private static Process Start(string output) =>
        CliTests.StartAndWaitFor(Path.Combine(output, ".partial"), "batch_*.npy", 1, ["generate", TestSupport.Toy("tiny-unet"), .. LongRun, "--out", output]);

    [Fact]
    public async Task ASecondRunOnALiveFolderIsRefusedAndInterruptingTheFirstSaysHowToResume()
    {
        string output = Path.Combine(TestSupport.TempDirectory(), "run");
        using var first = Start(output);
        var stderrTask = first.StandardError.ReadToEndAsync();
        // Even with --overwrite: the folder belongs to the live run.
        var (code, _, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("tiny-unet"), "--count", "4", "--steps", "5", "--out", output, "--overwrite");
        Assert.Equal(2, code);
        Assert.Contains("another run is writing this folder", stderr);

        using (var kill = Process.Start("kill", ["-INT", first.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!) kill.WaitForExit();
        Assert.True(first.WaitForExit(30_000), "the interrupted run did not stop");
        Assert.Equal(130, first.ExitCode);
        Assert.Contains("--resume", await stderrTask);
        Assert.Empty(Directory.GetFiles(output, ".*.tmp").Concat(Directory.GetFiles(Path.Combine(output, ".partial"), ".*.tmp")));

        // The lock died with the process: the folder can be resumed (and is killed again here to keep the test short).
        using var resumed = Start(output);
        resumed.Kill(entireProcessTree: true);
        resumed.WaitForExit();
    }
}

/// <summary>Issue #17, item 5: an overwrite leaves exactly the new run, never the old report beside new files or the old run's extra images.</summary>
public class OverwriteTests
{
    [Fact]
    public void ASmallerRunReplacesALargerOneCompletely()
    {
        string output = Path.Combine(TestSupport.TempDirectory(), "run");
        var (code, _, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("gmm-image"), "--count", "12", "--steps", "5", "--out", output);
        Assert.True(code == 0, stderr);
        Assert.Equal(12, Directory.GetFiles(output, "sample_*.png").Length);
        (code, _, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("gmm-image"), "--count", "3", "--steps", "5", "--seed", "9", "--out", output, "--overwrite");
        Assert.True(code == 0, stderr);
        Assert.Equal(3, Directory.GetFiles(output, "sample_*.png").Length);
        var report = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!;
        Assert.Equal(9, (long)report["seed"]!);
        var listed = report["files"]!.AsArray().Select(f => (string)f!).Append("report.json").Order().ToArray();
        Assert.Equal(listed, Directory.GetFiles(output).Select(Path.GetFileName).Order().ToArray());
    }
}
