using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>Issue #9: loaders fail only with the documented error, and generation is safe from several threads.</summary>
public class ReliabilityTests(ModelSessions sessions) : IClassFixture<ModelSessions>
{
    /// <summary>Random bytes, random truncations and random byte flips of a file.</summary>
    private static IEnumerable<byte[]> Corruptions(byte[] original, int seed, int each)
    {
        var random = new Random(seed);
        for (int i = 0; i < each; i++)
        {
            var noise = new byte[random.Next(0, 2 * original.Length + 1)];
            random.NextBytes(noise);
            yield return noise;
            yield return original[..random.Next(0, original.Length)];
            var flipped = (byte[])original.Clone();
            for (int f = 0; f < 1 + random.Next(8); f++) flipped[random.Next(flipped.Length)] ^= (byte)(1 << random.Next(8));
            yield return flipped;
        }
    }

    /// <summary>Runs a loader on a corrupted copy: it may succeed (a flip can leave a valid file) or throw ConfigException; nothing else, and within a time limit.</summary>
    private static void AssertOnlyDocumentedErrors(string what, Action load)
    {
        var task = Task.Run(() =>
        {
            try { load(); }
            catch (ConfigException) { }
        });
        if (!task.Wait(TimeSpan.FromSeconds(20))) Assert.Fail($"{what}: the loader hung");
        if (task.Exception is { } e) Assert.Fail($"{what}: {e.InnerException!.GetType().Name}: {e.InnerException.Message}");
    }

    [Fact]
    public void NpyLoaderFuzz()
    {
        string dir = TestSupport.TempDirectory(), path = Path.Combine(dir, "a.npy");
        NpyFile.Write(path, Enumerable.Range(0, 24).Select(i => (float)i).ToArray(), [2, 3, 4]);
        var original = File.ReadAllBytes(path);
        int n = 0;
        foreach (var bytes in Corruptions(original, seed: 1, each: 300))
        {
            File.WriteAllBytes(path, bytes);
            AssertOnlyDocumentedErrors($"npy case {n++}", () => NpyFile.Read(path));
        }
    }

    [Fact]
    public void SchedulerConfigFuzz()
    {
        var original = File.ReadAllBytes(Path.Combine(TestSupport.Toy("gmm-image"), "scheduler", "scheduler_config.json"));
        int n = 0;
        foreach (var bytes in Corruptions(original, seed: 2, each: 300))
        {
            string text = System.Text.Encoding.UTF8.GetString(bytes);
            AssertOnlyDocumentedErrors($"config case {n++}", () => SchedulerConfig.Parse(text, "fuzz"));
        }
    }

    /// <summary>The side files a model folder or a checkpoint may hold: data_moments.json, mixture.json and the KL mixture's saved set-up.</summary>
    [Fact]
    public void SideFileFuzz()
    {
        string dir = TestSupport.TempDirectory();
        var moments = File.ReadAllBytes(Path.Combine(TestSupport.RepositoryRoot, "models", "fashion-v", "data_moments.json"));
        var mixture = File.ReadAllBytes(Path.Combine(TestSupport.Toy("gmm2d"), "mixture.json"));
        var envelope = System.Text.Encoding.UTF8.GetBytes(new OnnxAlign.Alignment.MixtureEnvelope(OnnxAlign.Alignment.MixtureMethod.TangentMixture,
            [new OnnxAlign.Alignment.MixtureComponent([0.5, -0.25], 0.1, new Estimate(1.5, 0.01), 1.0)], 0.2, [], 1234).ToJson());
        int n = 0;
        foreach (var bytes in Corruptions(moments, seed: 4, each: 150))
        {
            File.WriteAllBytes(Path.Combine(dir, "data_moments.json"), bytes);
            AssertOnlyDocumentedErrors($"data_moments case {n++}", () => DataMoments.Read(dir));
        }
        foreach (var bytes in Corruptions(mixture, seed: 5, each: 150))
        {
            File.WriteAllBytes(Path.Combine(dir, "mixture.json"), bytes);
            AssertOnlyDocumentedErrors($"mixture case {n++}", () => OnnxAlign.Evaluation.GaussianMixture.Load(Path.Combine(dir, "mixture.json")));
        }
        foreach (var bytes in Corruptions(envelope, seed: 6, each: 150))
        {
            string text = System.Text.Encoding.UTF8.GetString(bytes);
            AssertOnlyDocumentedErrors($"envelope case {n++}", () => OnnxAlign.Alignment.MixtureEnvelope.FromJson(text, "fuzz"));
        }
    }

    [Theory]
    [InlineData("gmm2d")]
    [InlineData("tiny-unet")]
    public void OnnxModelLoaderFuzz(string toy)
    {
        var located = DiffusionModel.Locate(TestSupport.Toy(toy));
        var original = File.ReadAllBytes(located.OnnxPath);
        string dir = TestSupport.TempDirectory();
        File.Copy(Path.Combine(Path.GetDirectoryName(located.OnnxPath)!, "scheduler_config.json"), Path.Combine(dir, "scheduler_config.json"));
        string path = Path.Combine(dir, "model.onnx");
        int n = 0;
        foreach (var bytes in Corruptions(original, seed: 3, each: 15))
        {
            File.WriteAllBytes(path, bytes);
            AssertOnlyDocumentedErrors($"{toy} model case {n++}", () =>
            {
                using var denoiser = DiffusionModel.Locate(dir).OpenDenoiser();
                // A corrupted file that still loads must also run or fail with the documented error.
                var x = new float[denoiser.SampleSize];
                denoiser.PredictNoise(x, 1, 10, new float[denoiser.SampleSize]);
            });
        }
    }

    /// <summary>Several threads generating at once, with one shared session and with a session each, equal the sequential runs.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ParallelGenerationsEqualSequentialOnes(bool sharedSession)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("tiny-unet"));
        var ddim = Sampler.Create("ddim", model.Config, 5);
        var requests = Enumerable.Range(0, 6).Select(i => new GenerationRequest { Count = 3, BatchSize = 1 + i % 3, Seed = 10 * i }).ToArray();
        var shared = sessions.Denoiser(model);
        var sequential = requests.Select(r => Generation.Run(shared, ddim, r).Samples).ToArray();
        var parallel = new float[requests.Length][];
        Parallel.For(0, requests.Length, new ParallelOptions { MaxDegreeOfParallelism = 6 }, i =>
        {
            if (sharedSession) parallel[i] = Generation.Run(shared, ddim, requests[i]).Samples;
            else
            {
                using var own = model.OpenDenoiser(new DenoiserOptions { IntraOpThreads = 1 });
                parallel[i] = Generation.Run(own, ddim, requests[i]).Samples;
            }
        });
        for (int i = 0; i < requests.Length; i++) TestSupport.AssertClose(sequential[i], parallel[i], 1e-5);
    }
}

/// <summary>Issue #9: a sample that turns NaN is caught at its step; stop keeps finished samples, skip drops only it.</summary>
public class NonFiniteTests(ModelSessions sessions) : IClassFixture<ModelSessions>
{
    private static (DiffusionModel Model, NpyArray Noise) Setup(int count, int poisoned)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var random = new Random(7);
        var data = Enumerable.Range(0, count * 2).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        data[poisoned * 2 + 1] = 3e38f;   // finite (x_T is checked for NaN) but overflows at the first step, as a faulty network would
        return (model, new NpyArray(data, [count, 2]));
    }

    [Fact]
    public void StopReportsStepAndSampleAndKeepsFinishedBatches()
    {
        var (model, noise) = Setup(8, poisoned: 5);
        var denoiser = sessions.Denoiser(model);
        var request = new GenerationRequest { Count = 8, BatchSize = 2, InitialNoise = noise };
        var fault = Assert.Throws<NonFiniteException>(() => Generation.Run(denoiser, Sampler.Create("ddim", model.Config, 10), request));
        Assert.Equal(1, fault.Step);
        Assert.Equal(5, fault.SampleIndex);
        Assert.Equal(4, fault.Finished.Count);
        Assert.Equal([0, 1, 2, 3], fault.Finished.Indices);
        Assert.All(fault.Finished.Samples, v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public void SkipDropsOnlyTheFaultySampleAndLeavesTheOthersUnchanged()
    {
        var (model, noise) = Setup(8, poisoned: 5);
        var denoiser = sessions.Denoiser(model);
        var ddim = Sampler.Create("ddim", model.Config, 10);
        var skipped = Generation.Run(denoiser, ddim, new GenerationRequest { Count = 8, BatchSize = 3, InitialNoise = noise, OnNonFinite = NonFinitePolicy.Skip });
        var clean = noise.Data.ToArray();
        clean[11] = 0;
        var reference = Generation.Run(denoiser, ddim, new GenerationRequest { Count = 8, BatchSize = 3, InitialNoise = new NpyArray(clean, [8, 2]) });
        Assert.Equal([5], skipped.Skipped);
        Assert.Equal([0, 1, 2, 3, 4, 6, 7], skipped.Indices);
        for (int k = 0; k < 7; k++)
        {
            int i = skipped.Indices[k];
            Assert.Equal(reference.Samples.AsSpan(i * 2, 2).ToArray(), skipped.Samples.AsSpan(k * 2, 2).ToArray());
        }
    }

    [Fact]
    public void CliStopExitsWithTheLocationAndSkipWritesTheRest()
    {
        var (_, noise) = Setup(6, poisoned: 3);
        string dir = TestSupport.TempDirectory(), noisePath = Path.Combine(dir, "noise.npy");
        NpyFile.Write(noisePath, noise.Data, [6, 2]);
        string stopped = Path.Combine(dir, "stopped"), skipped = Path.Combine(dir, "skipped");
        var (code, _, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("gmm2d"), "--count", "6", "--batch", "2", "--steps", "10", "--sampler", "ddim",
                                                   "--init-noise", noisePath, "--out", stopped);
        Assert.Equal(3, code);
        Assert.Contains("step 1 of sample 3", stderr);
        Assert.Equal([2, 2], NpyFile.Read(Path.Combine(stopped, "samples.npy")).Shape);
        Assert.Contains("\"stopped\"", File.ReadAllText(Path.Combine(stopped, "report.json")));

        (code, _, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("gmm2d"), "--count", "6", "--batch", "2", "--steps", "10", "--sampler", "ddim",
                                               "--init-noise", noisePath, "--out", skipped, "--on-nan", "skip");
        Assert.True(code == 0, stderr);
        Assert.Contains("skipped 1 samples", stderr);
        Assert.Equal([5, 2], NpyFile.Read(Path.Combine(skipped, "samples.npy")).Shape);
    }
}

/// <summary>Issue #9: a killed run leaves only complete files, and --resume finishes it with exactly the files of an uninterrupted run.</summary>
[Trait("Category", "Slow")]
public class ResumeTests
{
    private static readonly string[] Arguments = ["--count", "48", "--batch", "4", "--steps", "100", "--sampler", "ddim", "--seed", "3", "--threads", "1"];

    [Fact]
    public void KillAndResumeGivesTheUninterruptedFiles()
    {
        string root = TestSupport.TempDirectory(), whole = Path.Combine(root, "whole"), resumed = Path.Combine(root, "resumed");
        string model = TestSupport.Toy("tiny-unet");
        var (code, _, stderr) = CliTests.Onnxalign(["generate", model, .. Arguments, "--out", whole]);
        Assert.True(code == 0, stderr);

        // Start the same run and kill it once two batches are saved.
        using (var process = CliTests.StartAndWaitFor(Path.Combine(resumed, ".partial"), "batch_*.npy", 2, ["generate", model, .. Arguments, "--out", resumed]))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }
        Assert.False(File.Exists(Path.Combine(resumed, "report.json")));
        Assert.False(File.Exists(Path.Combine(resumed, "samples.npy")));

        // Without --resume the folder is protected; with other settings resume is refused.
        (code, _, stderr) = CliTests.Onnxalign(["generate", model, .. Arguments, "--out", resumed]);
        Assert.Equal(2, code);
        Assert.Contains("--resume", stderr);
        (code, _, stderr) = CliTests.Onnxalign(["generate", model, .. Arguments, "--eta", "0.5", "--out", resumed, "--resume"]);
        Assert.Equal(2, code);
        Assert.Contains("other settings", stderr);

        // The fingerprint is the run plan, not the command line: options in another order, a default spelled out and
        // another thread count are the same run.
        string[] reordered = [.. Arguments.Chunk(2).Reverse().SelectMany(pair => pair).Where(a => a is not ("--threads" or "1")),
                              "--threads", "2", "--on-nan", "stop"];
        (code, var stdout, stderr) = CliTests.Onnxalign(["generate", "--out", resumed, .. reordered, model, "--resume"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("resuming:", stdout);
        Assert.False(Directory.Exists(Path.Combine(resumed, ".partial")));
        var expected = Directory.GetFiles(whole).Select(Path.GetFileName).Where(f => f != "report.json").Order().ToArray();
        Assert.Equal(expected, Directory.GetFiles(resumed).Select(Path.GetFileName).Where(f => f != "report.json").Order().ToArray());
        foreach (var file in expected)
            Assert.True(File.ReadAllBytes(Path.Combine(whole, file!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(resumed, file!))), $"{file} differs");
    }
}

/// <summary>Issue #9, item 1: each kind of bad input is one line naming the file or flag, exit 2, and nothing written.</summary>
public class BadInputTests
{
    private static string Fixtures()
    {
        string dir = TestSupport.TempDirectory();
        NpyFile.Write(Path.Combine(dir, "theta3.npy"), [1f, 2f, 3f], [3]);
        NpyFile.Write(Path.Combine(dir, "noise3x2.npy"), new float[6], [3, 2]);
        NpyFile.Write(Path.Combine(dir, "one.npy"), new float[1024], [1, 1, 32, 32]);
        NpyFile.Write(Path.Combine(dir, "small.npy"), new float[5 * 784], [5, 1, 28, 28]);
        File.WriteAllText(Path.Combine(dir, "exists.json"), "{}");
        NpyFile.Write(Path.Combine(dir, "noise-nan.npy"), [0f, float.NaN, 0f, 0f], [2, 2]);
        File.WriteAllText(Path.Combine(dir, "a-file"), "not a folder");
        NpyFile.Write(Path.Combine(dir, "hidden-wrong-width.npy"), new float[77 * 16], [77, 16]);
        Directory.CreateDirectory(Path.Combine(dir, "folder.npy"));
        // A network whose inputs match no convention: the classifier (input x → logits), with a config beside it.
        string wrong = Path.Combine(dir, "wrong-inputs");
        Directory.CreateDirectory(wrong);
        File.Copy(Path.Combine(TestSupport.RepositoryRoot, "models", "fashion", "classifier", "model.onnx"), Path.Combine(wrong, "model.onnx"));
        File.Copy(Path.Combine(TestSupport.Toy("gmm2d"), "scheduler_config.json"), Path.Combine(wrong, "scheduler_config.json"));
        // A toy whose ground-truth mixture.json is garbage, and one whose data_moments.json has a bad variance.
        foreach (var (name, file, text) in new[] { ("bad-mixture", "mixture.json", "{ not json"), ("bad-moments", "data_moments.json", """{"variance": "x"}"""), ("negative-moments", "data_moments.json", """{"variance": -1}""") })
        {
            string folder = Path.Combine(dir, name);
            Directory.CreateDirectory(folder);
            foreach (var f in new[] { "model.onnx", "scheduler_config.json" }) File.Copy(Path.Combine(TestSupport.Toy("gmm2d"), f), Path.Combine(folder, f));
            File.WriteAllText(Path.Combine(folder, file), text);
        }
        // A model folder without a scheduler config.
        string noConfig = Path.Combine(dir, "no-config");
        Directory.CreateDirectory(noConfig);
        File.Copy(Path.Combine(TestSupport.Toy("gmm2d"), "model.onnx"), Path.Combine(noConfig, "model.onnx"));
        // Images with the wrong channel count / size for prox on gmm-image (1×8×8).
        string images = Path.Combine(dir, "images");
        Directory.CreateDirectory(images);
        ImageFiles.WritePng(Path.Combine(images, "rgb.png"), new float[3 * 8 * 8], [3, 8, 8]);
        File.WriteAllText(Path.Combine(images, "broken.png"), "not a png");
        return dir;
    }

    [Theory]
    [InlineData("generate|{toy}|--tilt|{dir}/theta3.npy", "theta3.npy")]
    [InlineData("generate|{toy}|--count|2147483647", "--count 2147483647")]
    [InlineData("generate|{fashion}|--count|300000|--batch|300000|--steps|2", "--batch 300000: one network call on 300000 samples")]
    [InlineData("generate|{image}|--sampler|ddim|--reward|brightness|--lambda|1e-30|--count|2|--steps|5", "--lambda: the tilt is too strong for the noise-space SMC")]
    [InlineData("generate|{image}|--reward|brightness|--lambda|3|--tilt-mode|fast|--logz-nodes|100000", "--logz-nodes 100000: expected 1 to 64")]
    [InlineData("generate|{image}|--reward|brightness|--lambda|1e-300|--align|w2|--no-clamp|--count|2|--steps|5", "--lambda 1E-300: the prox's step a/λ overflows")]
    [InlineData("bench|{image}|--repeats|1|--steps|2|--batch|2|--out|{dir}/a-file/x.json", "a-file/x.json: its folder does not exist")]
    [InlineData("quality|{fashion}|--samples|{dir}/one.npy|--out|{dir}", "is a folder; this writes one file")]
    [InlineData("generate||--count|2", "MODEL '': expected a model folder or a .onnx file")]
    [InlineData("generate|{image}|--reward|direction:|--lambda|1", "--reward 'direction:': expected a file after 'direction:'")]
    [InlineData("generate|{image}|--tilt|{dir}/folder.npy", "folder.npy: is a folder, not a .npy file")]
    [InlineData("frobnicate", "Unrecognized command or argument 'frobnicate'")]
    [InlineData("generate|{sd}|--encoder-hidden-states|{dir}/hidden-wrong-width.npy|--count|1|--steps|2", "--encoder-hidden-states: hidden states of [77, 16] do not fit")]
    [InlineData("generate|{toy}|--count|2|--shard|0/4", "holds no samples")]
    [InlineData("generate|{dir}/bad-mixture", "mixture.json: not a readable mixture")]
    [InlineData("generate|{dir}/bad-moments", "data_moments.json")]
    [InlineData("generate|{dir}/negative-moments", "must be a finite number > 0")]
    [InlineData("generate|{toy}|--threads|100000", "--threads 100000")]
    [InlineData("generate|{toy}|--eta|1e6", "--eta")]
    [InlineData("generate|{toy}|--sampler|ddpm|--eta|0.5", "--eta 0.5: applies to --sampler ddim only (this run's sampler is ddpm)")]
    [InlineData("align|{toy}|--constraint|brightness>=0|--samples-per-iteration|1", "--samples-per-iteration 1: expected ≥ 2")]
    [InlineData("generate|{image}|--reward|brightness|--lambda|1|--black-box|sir", "--black-box: applies to network rewards (onnx:…); 'brightness' has a declared structure")]
    [InlineData("generate|{toy}|--init-noise|/dev/zero|--count|2", "missing NumPy magic")]
    [InlineData("generate|{toy}|--init-noise|{dir}/noise3x2.npy|--count|2", "--init-noise: shape [3, 2]")]
    [InlineData("generate|{toy}|--init-noise|{dir}/noise-nan.npy|--count|2", "--init-noise: contains NaN")]
    [InlineData("generate|{toy}|--out|{dir}/a-file/run", "not writable")]
    [InlineData("generate|{toy}|--resume", "holds no interrupted run")]
    [InlineData("generate|{toy}|--on-nan|ignore", "--on-nan 'ignore'")]
    [InlineData("generate|{dir}/wrong-inputs", "cannot tell which input")]
    [InlineData("generate|{dir}/no-config", "no scheduler config")]
    [InlineData("generate|{toy}|--reward|max(brightness|--lambda|1", "unknown reward")]
    [InlineData("generate|{toy}|--reward|any-class:0@{dir}|--lambda|1", "at least two classes")]
    [InlineData("prox|--in|{dir}/images|--reward|brightness|--lambda|1|--model|{image}", "images")]
    [InlineData("generate|{toy}|--device|gpu", "expected cpu, cuda or cuda:N")]
    [InlineData("align|{toy}|--constraint|brightness>=0.1|--threads|0", "--threads 0")]
    [InlineData("sweep|{fashion}|--reward|class:Trouser|--device|cuda:x", "expected cpu, cuda or cuda:N")]
    [InlineData("quality|{fashion}|--count|4|--threads|-1", "--threads -1")]
    [InlineData("quality|{fashion}|--samples|{dir}/one.npy", "needs at least 2")]
    [InlineData("quality|{fashion}|--samples|{dir}/small.npy", "the evaluator takes [1, 32, 32]")]
    [InlineData("quality|{fashion}|--samples|{dir}/small.npy|--out|{dir}/exists.json", "--out")]
    [InlineData("quality|{fashion}|--samples|{dir}/missing.npy", "--samples")]
    [InlineData("align|{toy}|--preferences|{dir}/images", "--preferences")]
    public void BadInputIsOneLineExitTwoAndNothingWritten(string command, string mentioned)
    {
        string dir = Fixtures();
        string output = Path.Combine(TestSupport.TempDirectory(), "never");
        var args = command.Replace("{toy}", TestSupport.Toy("gmm2d")).Replace("{image}", TestSupport.Toy("gmm-image")).Replace("{sd}", TestSupport.Toy("tiny-sd"))
            .Replace("{fashion}", Path.Combine(TestSupport.RepositoryRoot, "models", "fashion")).Replace("{dir}", dir).Split('|').ToList();
        if (!args.Contains("--out")) args.AddRange(["--out", output]);
        var (code, _, stderr) = CliTests.Onnxalign([.. args]);
        Assert.Equal(2, code);
        Assert.StartsWith("error: ", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Contains(mentioned, stderr);
        Assert.False(Directory.Exists(output) || File.Exists(output));
    }

    /// <summary>A folder of someone's files (not an OnnxAlign run) is refused without --overwrite: the run's samples.npy would replace theirs; a filesystem root always.</summary>
    [Fact]
    public void AFolderOfOtherFilesIsRefusedUnlessOverwriteIsGiven()
    {
        string folder = TestSupport.TempDirectory();
        File.WriteAllText(Path.Combine(folder, "samples.npy"), "precious");
        string[] run = ["generate", TestSupport.Toy("gmm2d"), "--count", "2", "--steps", "3"];
        var (code, _, stderr) = CliTests.Onnxalign([.. run, "--out", folder]);
        Assert.Equal(2, code);
        Assert.Contains("holds files of its own (samples.npy)", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Equal("precious", File.ReadAllText(Path.Combine(folder, "samples.npy")));
        Assert.Equal(["samples.npy"], Directory.GetFileSystemEntries(folder).Select(Path.GetFileName));
        foreach (string[] root in new[] { new[] { "--out", "/" }, new[] { "--out", "/", "--overwrite" } })
        {
            (code, _, stderr) = CliTests.Onnxalign([.. run, .. root]);
            Assert.Equal(2, code);
            Assert.Contains("--out /: is a filesystem root", stderr);
        }
        (code, _, stderr) = CliTests.Onnxalign([.. run, "--out", folder, "--overwrite"]);
        Assert.True(code == 0, stderr);
        Assert.NotEqual("precious", File.ReadAllText(Path.Combine(folder, "samples.npy")));
    }

    /// <summary>Every sample skipped as NaN/±∞ under --on-nan skip: a finished run of 0 samples with the warning, not an internal error (was: "Sequence contains no elements", then a float ∞ in the report).</summary>
    [Fact]
    public void ARunWhoseEverySampleIsSkippedFinishesEmpty()
    {
        string dir = TestSupport.TempDirectory(), output = Path.Combine(dir, "run");
        NpyFile.Write(Path.Combine(dir, "huge.npy"), Enumerable.Repeat(3e38f, 64).ToArray(), [1, 8, 8]);
        var (code, stdout, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("gmm-image"), "--tilt", Path.Combine(dir, "huge.npy"), "--tilt-mode", "fast",
            "--logz-samples", "0", "--on-nan", "skip", "--count", "2", "--steps", "5", "--out", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("skipped 2 samples that turned NaN/±∞", stderr);
        Assert.Contains("wrote 0 samples", stdout);
        var report = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!;
        Assert.Equal(2, report["skipped_non_finite"]!.AsArray().Count);
        Assert.Equal(0, NpyFile.Read(Path.Combine(output, "samples.npy")).Rows);
    }

    [Fact]
    public void AnEmptyOutNamesTheFlag()
    {
        var (code, _, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("gmm2d"), "--out", "");
        Assert.Equal(2, code);
        Assert.Contains("--out", stderr);
    }

    private sealed class PlantedStore(float[] batch) : IBatchStore
    {
        public bool TryLoad(int firstIndex, Span<float> destination)
        {
            if (firstIndex != 0 || destination.Length != batch.Length) return false;
            batch.CopyTo(destination);
            return true;
        }
        public void Save(int firstIndex, ReadOnlySpan<float> values, IReadOnlyList<int> shape) { }
    }

    /// <summary>A folder where a saved batch belongs is damage named as the checkpoint's (--resume), not a full disk (was exit 1 "free space and rerun").</summary>
    [Fact]
    public void AFolderInPlaceOfASavedBatchIsADamagedCheckpoint()
    {
        string output = TestSupport.TempDirectory();
        var checkpoint = BatchCheckpoint.Start(output, "{}");
        Directory.CreateDirectory(Path.Combine(BatchCheckpoint.PathOf(output), "batch_000000002.npy"));
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        using var denoiser = model.OpenDenoiser();
        var e = Assert.Throws<ConfigException>(() => Generation.Run(denoiser, Sampler.Create("ddim", model.Config, 3), new GenerationRequest { Count = 4, BatchSize = 2, Checkpoint = checkpoint }));
        Assert.Equal("GenerationRequest.Checkpoint", e.Parameter);
        Assert.Contains("is a folder where a saved batch belongs", e.Message);
    }

    [Fact]
    public void ANaNPlantedInASavedBatchIsDamageUnderStopAndASkipUnderSkip()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        using var denoiser = model.OpenDenoiser();
        var ddim = Sampler.Create("ddim", model.Config, 5);
        var store = new PlantedStore([0.1f, 0.2f, float.NaN, 0.4f]);
        var stop = new GenerationRequest { Count = 4, BatchSize = 2, Checkpoint = store };
        var e = Assert.Throws<ConfigException>(() => Generation.Run(denoiser, ddim, stop));
        Assert.Contains("damaged", e.Message);
        var skipped = Generation.Run(denoiser, ddim, stop with { OnNonFinite = NonFinitePolicy.Skip });
        Assert.Equal([1], skipped.Skipped);
    }
}

/// <summary>Issue #17, class 6: closed or full standard streams, and a full disk.</summary>
[Trait("Category", "Slow")]
public class StreamAndDiskTests
{
    private static readonly string[] Arguments = ["--count", "48", "--batch", "4", "--steps", "4", "--sampler", "ddim", "--seed", "3", "--threads", "1"];

    private static (int Code, string Err) Shell(string command)
    {
        var start = new System.Diagnostics.ProcessStartInfo("/bin/sh") { RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(command);
        using var p = System.Diagnostics.Process.Start(start)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, err);
    }

    private static string Cli => Path.Combine(AppContext.BaseDirectory, "OnnxAlign.Cli.dll");

    /// <summary>What the CLI prints is information: a closed or full stdout or stderr never costs the run.</summary>
    [Theory]
    [InlineData(">&-")]
    [InlineData("> /dev/full")]
    [InlineData("2>&-")]
    [InlineData(">&- 2>&-")]
    public void ClosedOrFullStreamsDoNotCostTheRun(string redirection)
    {
        string outDir = Path.Combine(TestSupport.TempDirectory(), "run");
        var (code, err) = Shell($"dotnet '{Cli}' generate '{TestSupport.Toy("tiny-unet")}' {string.Join(' ', Arguments)} --out '{outDir}' {redirection}");
        Assert.True(code == 0, err);
        Assert.True(File.Exists(Path.Combine(outDir, "report.json")));
        Assert.Equal(48, NpyFile.Read(Path.Combine(outDir, "samples.npy")).Rows);
        Assert.False(File.Exists(Path.Combine(outDir, "error.log")));
        Assert.False(Directory.Exists(Path.Combine(outDir, ".partial")));
        if (redirection.Contains("/dev/full")) Assert.Contains("standard output could not be written", err);
    }

    /// <summary>An immutable checkpoint folder or output folder (chattr +i, where the file system has it): one line, no stack trace, no crash.</summary>
    [SkippableTheory]
    [InlineData(".partial")]
    [InlineData("")]
    public void AnImmutableFolderIsOneLineNotACrash(string sub)
    {
        string outDir = Path.Combine(TestSupport.TempDirectory(), "run");
        Directory.CreateDirectory(Path.Combine(outDir, ".partial"));
        File.WriteAllText(Path.Combine(outDir, ".partial", "run.json"), "{}\n");
        string target = Path.Combine(outDir, sub);
        var (made, why) = Shell($"chattr +i '{target}'");
        Skip.If(made != 0, $"no chattr here ({why.Trim()})");
        try
        {
            var (code, _, stderr) = CliTests.Onnxalign(["generate", TestSupport.Toy("tiny-unet"), .. Arguments, "--out", outDir, "--overwrite"]);
            Assert.True(code is 1 or 2, $"exit {code}: {stderr}");
            Assert.Single(stderr.Split('\n'), l => l.StartsWith("error:"));
            Assert.DoesNotContain("   at ", stderr);
            Assert.False(File.Exists(Path.Combine(outDir, "samples.npy")));
        }
        finally
        {
            Shell($"chattr -i '{target}'");
        }
    }

    /// <summary>
    /// A disk that fills mid-run (a small tmpfs): one line, exit 1, no half-written file, the finished batches kept;
    /// with space again, --resume finishes it with exactly the files of an uninterrupted run.
    /// </summary>
    [SkippableFact]
    public void AFullDiskKeepsTheFinishedBatchesAndResumes()
    {
        string root = TestSupport.TempDirectory(), disk = Path.Combine(root, "disk"), whole = Path.Combine(root, "whole");
        Directory.CreateDirectory(disk);
        var (mounted, why) = Shell($"mount -t tmpfs -o size=96k tmpfs '{disk}'");
        Skip.If(mounted != 0, $"cannot mount a tmpfs here ({why.Trim()})");
        try
        {
            string model = TestSupport.Toy("tiny-unet");
            var (code, _, stderr) = CliTests.Onnxalign(["generate", model, .. Arguments, "--out", whole]);
            Assert.True(code == 0, stderr);

            string outDir = Path.Combine(disk, "run");
            (code, _, stderr) = CliTests.Onnxalign(["generate", model, .. Arguments, "--out", outDir]);
            Assert.Equal(1, code);
            Assert.Contains("No space left on device", stderr);
            Assert.Contains("--resume", stderr);
            Assert.DoesNotContain("   at ", stderr);   // no stack trace
            Assert.Empty(Directory.GetFiles(outDir, "*.tmp", SearchOption.AllDirectories).Concat(Directory.GetFiles(outDir, ".*.tmp", SearchOption.AllDirectories)));
            Assert.False(File.Exists(Path.Combine(outDir, "report.json")));
            Assert.False(File.Exists(Path.Combine(outDir, "samples.npy")));

            Assert.Equal(0, Shell($"mount -o remount,size=16m '{disk}'").Code);
            (code, var stdout, stderr) = CliTests.Onnxalign(["generate", model, .. Arguments, "--out", outDir, "--resume"]);
            Assert.True(code == 0, stderr);
            Assert.Contains("resuming:", stdout);
            foreach (var file in Directory.GetFiles(whole).Select(Path.GetFileName).Where(f => f is not ("report.json")))
                Assert.True(File.ReadAllBytes(Path.Combine(whole, file!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(outDir, file!))), $"{file} differs");
        }
        finally
        {
            Shell($"umount '{disk}'");
        }
    }
}

/// <summary>Issue #17, class 6: a network whose output batch is not its input's (its metadata leaves the batch dynamic).</summary>
public class OutputShapeTests
{
    [Fact]
    public void ANetworkWhoseOutputBatchDiffersIsBadInputNotACrash()
    {
        string dir = TestSupport.TempDirectory();
        var g = new OnnxAlign.ModelForge.OnnxGraph("doubled_batch");
        string sample = g.Input("sample", OnnxAlign.ModelForge.OnnxType.Float, -1, 2);
        g.Input("timestep", OnnxAlign.ModelForge.OnnxType.Float, -1);
        g.Output("out_sample", OnnxAlign.ModelForge.OnnxType.Float, -1, 2);
        g.Node("Concat", [sample, sample], n => OnnxAlign.ModelForge.OnnxGraph.IntAttribute(n, "axis", 0), output: "out_sample");
        File.WriteAllBytes(Path.Combine(dir, "model.onnx"), g.ToModel());
        File.Copy(Path.Combine(TestSupport.Toy("tiny-unet"), "scheduler_config.json"), Path.Combine(dir, "scheduler_config.json"));

        // The library: a ConfigException naming the file and the expected shape.
        var model = DiffusionModel.Locate(dir);
        using (var network = model.OpenDenoiser())
        {
            var e = Assert.Throws<ConfigException>(() => network.PredictNoise(new float[8], 4, 500, new float[8]));
            Assert.Contains("model.onnx", e.Message);
            Assert.Contains("[batch, 2]", e.Message);
        }

        // The CLI: one line, exit 2, nothing written.
        string outDir = Path.Combine(TestSupport.TempDirectory(), "run");
        var (code, _, stderr) = CliTests.Onnxalign("generate", dir, "--count", "8", "--steps", "2", "--out", outDir);
        Assert.Equal(2, code);
        Assert.Contains("output must have the sample's shape", stderr);
        Assert.Single(stderr.Trim().Split('\n'), l => l.StartsWith("error:"));
        Assert.False(Directory.Exists(outDir));
    }
}
