using System.Diagnostics;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Jobs;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>Issue #20: array-job shards from the environment, plans, and a merge that equals the single-machine run.</summary>
public sealed class ScaleOutTests(ModelSessions sessions) : IClassFixture<ModelSessions>
{
    private static Func<string, string?> Environment(params (string Name, string Value)[] variables) =>
        name => variables.FirstOrDefault(v => v.Name == name).Value;

    [Fact]
    public void SlurmAndKubernetesIndicesBecomeShards()
    {
        Assert.Equal((new Shard(2, 4), "slurm"), ArrayJob.FromEnvironment(Environment(("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_COUNT", "4"))));
        // --array=1-4 numbers its tasks from 1: the shard counts from the array's first task.
        Assert.Equal(new Shard(0, 4), ArrayJob.FromEnvironment(Environment(("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_COUNT", "4"),
                                                                          ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_MAX", "4"))).Shard);
        Assert.Equal((new Shard(5, 8), "kubernetes"), ArrayJob.FromEnvironment(Environment(("JOB_COMPLETION_INDEX", "5")), count: 8));
        Assert.Equal(new Shard(5, 8), ArrayJob.FromEnvironment(Environment(("JOB_COMPLETION_INDEX", "5"), (ArrayJob.ShardCountVariable, "8"))).Shard);
    }

    [Theory]
    [InlineData("neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX")]
    [InlineData("the shard count is not", "JOB_COMPLETION_INDEX", "3")]
    [InlineData("is not a shard of 4", "SLURM_ARRAY_TASK_ID", "4", "SLURM_ARRAY_TASK_COUNT", "4")]
    [InlineData("not a non-negative integer", "SLURM_ARRAY_TASK_ID", "x", "SLURM_ARRAY_TASK_COUNT", "4")]
    [InlineData("not contiguous", "SLURM_ARRAY_TASK_ID", "0", "SLURM_ARRAY_TASK_COUNT", "3", "SLURM_ARRAY_TASK_MIN", "0", "SLURM_ARRAY_TASK_MAX", "8")]
    public void AnEnvironmentThatIsNoArrayJobIsRefused(string message, params string[] pairs)
    {
        var variables = Enumerable.Range(0, pairs.Length / 2).Select(i => (pairs[2 * i], pairs[2 * i + 1])).ToArray();
        var e = Assert.Throws<ConfigException>(() => ArrayJob.FromEnvironment(Environment(variables)));
        Assert.Equal("shard", e.Parameter);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void ConcatenatedNpyFilesAreTheBytesOfOneWrite()
    {
        string dir = TestSupport.TempDirectory();
        var random = new Random(3);
        var all = Enumerable.Range(0, 7 * 6).Select(_ => (float)random.NextDouble()).ToArray();
        NpyFile.Write(Path.Combine(dir, "a.npy"), all.AsSpan(0, 3 * 6), [3, 2, 3]);
        NpyFile.Write(Path.Combine(dir, "b.npy"), all.AsSpan(3 * 6, 0), [0, 2, 3]);
        NpyFile.Write(Path.Combine(dir, "c.npy"), all.AsSpan(3 * 6), [4, 2, 3]);
        NpyFile.Write(Path.Combine(dir, "whole.npy"), all, [7, 2, 3]);
        var shape = NpyFile.Concatenate(Path.Combine(dir, "merged.npy"), [Path.Combine(dir, "a.npy"), Path.Combine(dir, "b.npy"), Path.Combine(dir, "c.npy")]);
        Assert.Equal([7, 2, 3], shape);
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "whole.npy")), File.ReadAllBytes(Path.Combine(dir, "merged.npy")));

        NpyFile.Write(Path.Combine(dir, "other.npy"), all.AsSpan(0, 6), [1, 6]);
        var e = Assert.Throws<ConfigException>(() => NpyFile.Concatenate(Path.Combine(dir, "bad.npy"), [Path.Combine(dir, "a.npy"), Path.Combine(dir, "other.npy")]));
        Assert.Contains("rows of shape [6]", e.Message);
        Assert.False(File.Exists(Path.Combine(dir, "bad.npy")));
    }

    /// <summary>The merge reads its samples in chunks (memory of one chunk, not of the run): the chunks are the array, and the statistics are one pass's, bit for bit.</summary>
    [Theory]
    [InlineData(6, 7)]      // per-coordinate mean and covariance
    [InlineData(300, 3)]    // value statistics (above the moment limit)
    public void StatisticsReadInChunksAreThoseOfTheWholeArray(int size, int chunkRows)
    {
        string dir = TestSupport.TempDirectory();
        var random = new Random(5);
        const int rows = 23;
        var all = Enumerable.Range(0, rows * size).Select(_ => (float)(random.NextDouble() * 4 - 1)).ToArray();
        string path = Path.Combine(dir, "x.npy");
        NpyFile.Write(path, all, [rows, size]);
        var chunks = NpyFile.ReadRows(path, chunkRows).ToList();
        Assert.Equal((rows + chunkRows - 1) / chunkRows, chunks.Count);
        Assert.Equal(all, chunks.SelectMany(c => c.Data));
        Assert.All(chunks, c => Assert.Equal(size, c.RowSize));
        Assert.Equal(OnnxAlign.IO.ReportJson.ToNode(OnnxAlign.Estimation.SampleStatistics.Of(all, size)).ToJsonString(),
                     OnnxAlign.IO.ReportJson.ToNode(OnnxAlign.Estimation.SampleStatistics.OfFile(path, size)).ToJsonString());
        // Numerics' chunkable arithmetic over the chunks gives the one-pass covariance bit for bit.
        var mean = new double[size];
        foreach (var c in chunks) Numerics.AddColumns(c.Data, size, mean);
        for (int j = 0; j < size; j++) mean[j] /= rows;
        Assert.Equal(Numerics.ColumnMeans(all, size), mean);
        if (size > 16) return;
        var cov = new double[size * size];
        foreach (var c in chunks) Numerics.AddCenteredProducts(c.Data, size, mean, cov);
        Assert.Equal(Numerics.ColumnCovariance(all, size), cov.Select(v => v / (rows - 1)));
    }

    [Fact]
    public void MergeNamesEveryMissingDuplicateForeignAndUnfinishedShard()
    {
        ShardPart Part(int index, int count = 4, string run = "r1", string? status = null)
        {
            var (start, length) = new Shard(index, count).Range(10);
            return new ShardPart($"dir{index}", run, new Shard(index, count), 10, start, Enumerable.Range(start, length).ToList(), status);
        }
        Assert.Equal([0, 1, 2, 3], ShardMerge.Check([Part(3), Part(1), Part(0), Part(2)]).Select(p => p.Shard.Index));
        var missing = Assert.Throws<ConfigException>(() => ShardMerge.Check([Part(0), Part(2)]));
        Assert.Contains("2 of 4 shards are missing: 1, 3", missing.Message);
        Assert.Contains("shard 2 is given twice", Assert.Throws<ConfigException>(() => ShardMerge.Check([Part(0), Part(1), Part(2), Part(2), Part(3)])).Message);
        Assert.Contains("is of another run", Assert.Throws<ConfigException>(() => ShardMerge.Check([Part(0), Part(1, run: "r2")])).Message);
        Assert.Contains("shard 1 is given twice", Assert.Throws<ConfigException>(() => ShardMerge.Check([Part(0, 2), Part(1, 2), Part(1, 2)])).Message);
        Assert.Contains("dir1 is shard 1/2", Assert.Throws<ConfigException>(() => ShardMerge.Check([Part(0), Part(1, 2)])).Message);
        Assert.Contains("shard 3 (dir3) is not complete: stopped", Assert.Throws<ConfigException>(() => ShardMerge.Check([Part(0), Part(1), Part(2), Part(3, status: "stopped")])).Message);
        var stray = Part(1) with { Indices = [9] };
        Assert.Contains("outside its block", Assert.Throws<ConfigException>(() => ShardMerge.Check([Part(0), stray, Part(2), Part(3)])).Message);
    }

    /// <summary>Shard files with NaN, too few rows, another shape or a missing PNG are refused before anything is written.</summary>
    [Fact]
    public void ShardFilesAreCheckedBeforeTheMergeWritesAnything()
    {
        string root = TestSupport.TempDirectory(), output = Path.Combine(root, "merged");
        ShardPart Part(int index, float[] values, int[] shape)
        {
            string dir = Path.Combine(root, $"s{index}");
            Directory.CreateDirectory(dir);
            NpyFile.Write(Path.Combine(dir, "samples.npy"), values, shape);
            return new ShardPart(dir, "r", new Shard(index, 2), 4, 2 * index, [2 * index, 2 * index + 1], "finished");
        }
        var good = Part(0, [1f, 2f, 3f, 4f], [2, 2]);
        ShardMerge.CheckFiles([good, Part(1, [1f, 2f, 3f, 4f], [2, 2])], [2]);
        foreach (var (values, shape, why) in new[]
                 {
                     (new[] { 1f, float.NaN, 3f, 4f }, new[] { 2, 2 }, "holds a NaN or ±∞ value (row 0)"),
                     (new[] { 1f, 2f }, new[] { 1, 2 }, "holds 1 samples, its report says 2"),
                     (new[] { 1f, 2f, 3f, 4f, 5f, 6f }, new[] { 2, 3 }, "holds rows of [3]"),
                 })
        {
            var bad = Part(1, values, shape);
            var e = Assert.Throws<ConfigException>(() => ShardMerge.Write(output, [good, bad], [2]));
            Assert.Contains(why, e.Message);
            Assert.Equal("shards", e.Parameter);
            Assert.False(Directory.Exists(output) && Directory.EnumerateFileSystemEntries(output).Any());
        }
        // Images: every shard's PNG must be there before the first is copied.
        var image = Part(1, new float[2 * 64], [2, 1, 8, 8]);
        var first = Part(0, new float[2 * 64], [2, 1, 8, 8]);
        ImageFiles.WritePng(Path.Combine(first.Directory, "sample_000000.png"), new float[64], [1, 8, 8]);
        ImageFiles.WritePng(Path.Combine(first.Directory, "sample_000001.png"), new float[64], [1, 8, 8]);
        ImageFiles.WritePng(Path.Combine(image.Directory, "sample_000002.png"), new float[64], [1, 8, 8]);
        Assert.Contains("sample_000003.png is missing", Assert.Throws<ConfigException>(() => ShardMerge.CheckFiles([first, image], [1, 8, 8])).Message);
    }

    [Fact]
    public void APlanIsRefusedByAnotherModelOrVersionAndWhenEdited()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        var other = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var plan = PlanFile.Create("generate", model, new Dictionary<string, string?> { ["count"] = "8", ["seed"] = "1", ["sampler"] = null },
                                   new JsonObject { ["data_variance"] = 0.25 });
        string path = Path.Combine(TestSupport.TempDirectory(), "plan.json");
        plan.Write(path);
        var read = PlanFile.Read(path);
        Assert.Equal(plan.Id, read.Id);
        Assert.Equal(plan.ToCanonicalJson(), read.ToCanonicalJson());
        read.CheckFor(model, path);
        Assert.Contains("made for another model", Assert.Throws<ConfigException>(() => read.CheckFor(other, path)).Message);
        Assert.Contains("made by OnnxAlign 0.0.1", Assert.Throws<ConfigException>(() => (read with { Version = "0.0.1" }).CheckFor(model, path)).Message);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"8\"", "\"9\""));
        Assert.Contains("edited after it was written", Assert.Throws<ConfigException>(() => PlanFile.Read(path)).Message);
        File.WriteAllText(path, "{\"format\": \"something else\"}");
        Assert.Contains("format 'something else'", Assert.Throws<ConfigException>(() => PlanFile.Read(path)).Message);
    }

    /// <summary>Every file of a run folder but report.json, as bytes.</summary>
    internal static Dictionary<string, byte[]> Files(string folder) =>
        Directory.GetFiles(folder).Where(f => Path.GetFileName(f) != "report.json").ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);

    internal static void AssertSameFiles(string expected, string actual)
    {
        var a = Files(expected);
        var b = Files(actual);
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (name, bytes) in a) Assert.True(bytes.AsSpan().SequenceEqual(b[name]), $"{name} differs between {expected} and {actual}");
    }

    [Fact]
    public void AShardRefusesARewardWhoseFilesChangedSinceThePlan()
    {
        string dir = TestSupport.TempDirectory();
        string direction = Path.Combine(dir, "direction.npy");
        NpyFile.Write(direction, Enumerable.Range(0, 64).Select(i => (float)Math.Sin(i)).ToArray(), [1, 8, 8]);
        string plan = Path.Combine(dir, "plan.json");
        var planned = CliTests.Onnxalign("plan", TestSupport.Toy("gmm-image"), "--count", "4", "--steps", "5", "--reward", $"direction:{direction}", "--lambda", "1",
                                         "--tilt-mode", "fast", "--logz-samples", "0", "--out", plan);
        Assert.True(planned.Code == 0, planned.Err);
        Assert.Equal(direction, (string)JsonNode.Parse(File.ReadAllText(plan))!["setup"]!["reward_files"]![0]!["file"]!);
        var ok = CliTests.Onnxalign("generate", "--plan", plan, "--shard", "0/2", "--out", Path.Combine(dir, "shard0"));
        Assert.True(ok.Code == 0, ok.Err);
        NpyFile.Write(direction, Enumerable.Range(0, 64).Select(i => (float)Math.Cos(i)).ToArray(), [1, 8, 8]);
        var refused = CliTests.Onnxalign("generate", "--plan", plan, "--shard", "1/2", "--out", Path.Combine(dir, "shard1"));
        Assert.Equal(2, refused.Code);
        Assert.Contains("reward file", refused.Err);
        Assert.False(Directory.Exists(Path.Combine(dir, "shard1")));
        // The class reward's classifier folder is the model's own: its W.npy, b.npy and classes.json are recorded.
        var files = OnnxAlign.Rewards.RewardSpec.Files("max(class:Bag|class:Trouser)", Path.Combine(TestSupport.RepositoryRoot, "models", "fashion"));
        Assert.Contains(files, f => f.EndsWith(Path.Combine("classifier", "W.npy")));
        Assert.Contains(files, f => f.EndsWith(Path.Combine("classifier", "classes.json")));
        Assert.Contains(OnnxAlign.Rewards.RewardSpec.Files($"onnx:{Path.Combine(TestSupport.RepositoryRoot, "models", "fashion", "evaluator")}@Trouser", null),
                        f => f.EndsWith("model.onnx"));
    }

    [Theory]
    [InlineData("plain")]
    [InlineData("fast-tilt")]
    [InlineData("hybrid-tilt")]
    [InlineData("kl-mixture")]
    public void ThreeShardsOfAPlanMergeToTheSingleRunByteForByte(string kind)
    {
        string dir = TestSupport.TempDirectory();
        // The upper half of the image: with the mean of all pixels, a convex reward max(z₁, z₂) of k = 2 features.
        string top = Path.Combine(dir, "top.npy");
        NpyFile.Write(top, Enumerable.Range(0, 64).Select(i => i < 32 ? 1 / MathF.Sqrt(32) : 0f).ToArray(), [1, 8, 8]);
        string[] options = kind switch
        {
            "plain" => [],
            "fast-tilt" => ["--reward", "channel-mean:0", "--lambda", "0.5", "--tilt-mode", "fast", "--logz-nodes", "2", "--logz-samples", "8"],
            "kl-mixture" => ["--reward", $"max(channel-mean:0|direction:{top})", "--lambda", "0.2", "--tilt-mode", "fast"],
            _ => ["--reward", "channel-mean:0", "--lambda", "0.5", "--tilt-mode", "hybrid", "--logz-samples", "0"],
        };
        string plan = Path.Combine(dir, "plan.json");
        var planned = CliTests.Onnxalign(["plan", TestSupport.Toy("gmm-image"), "--count", "23", "--steps", "12", "--sampler", "ddpm", "--batch", "5", .. options, "--out", plan]);
        Assert.True(planned.Code == 0, planned.Err);
        var setup = JsonNode.Parse(File.ReadAllText(plan))!["setup"]!.AsObject();
        if (kind == "fast-tilt") Assert.NotNull(setup["log_partition"]);
        if (kind == "hybrid-tilt") Assert.NotNull(setup["data_variance"]);
        if (kind == "kl-mixture") Assert.NotNull(setup["mixture_envelope"]);

        var single = CliTests.Onnxalign("generate", "--plan", plan, "--out", Path.Combine(dir, "single"));
        Assert.True(single.Code == 0, single.Err);
        // The shards run in another order, with other thread counts, and are given to merge in a third order.
        foreach (int i in new[] { 2, 0, 1 })
        {
            var shard = CliTests.Onnxalign("generate", "--plan", plan, "--shard", $"{i}/3", "--out", Path.Combine(dir, $"shard{i}"), "--threads", "1");
            Assert.True(shard.Code == 0, shard.Err);
        }
        var merged = CliTests.Onnxalign("merge", "--out", Path.Combine(dir, "merged"), Path.Combine(dir, "shard1"), Path.Combine(dir, "shard2"), Path.Combine(dir, "shard0"));
        Assert.True(merged.Code == 0, merged.Err);
        AssertSameFiles(Path.Combine(dir, "single"), Path.Combine(dir, "merged"));
        Assert.Equal(23, Directory.GetFiles(Path.Combine(dir, "merged"), "sample_*.png").Length);

        // The same command line without a plan draws the same samples: a plan fixes the set-up, never the law.
        var direct = CliTests.Onnxalign(["generate", TestSupport.Toy("gmm-image"), "--count", "23", "--steps", "12", "--sampler", "ddpm", .. options, "--out", Path.Combine(dir, "direct")]);
        Assert.True(direct.Code == 0, direct.Err);
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "direct", "samples.npy")), File.ReadAllBytes(Path.Combine(dir, "merged", "samples.npy")));

        var a = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "single", "report.json")))!;
        var b = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "merged", "report.json")))!;
        Assert.Equal(a["run"]!["id"]!.ToJsonString(), b["run"]!["id"]!.ToJsonString());
        Assert.Equal(a["statistics"]!.ToJsonString(), b["statistics"]!.ToJsonString());
        Assert.Equal((long)a["network_evaluations"]!, (long)b["network_evaluations"]!);
        Assert.Equal(3, b["shards"]!.AsArray().Count);
        if (kind != "plain")
        {
            // Per-sample summaries pooled from the shards are the single run's (to rounding); the plan's log Z is every shard's.
            var (ra, rb) = (a["alignment"]!["reward_after"]!, b["alignment"]!["reward_after"]!);
            Assert.Equal((double)ra["mean"]!, (double)rb["mean"]!, 9);
            Assert.Equal((double)ra["standard_error"]!, (double)rb["standard_error"]!, 9);
            Assert.Equal(a["alignment"]!["log_partition"]?.ToJsonString(), b["alignment"]!["log_partition"]?.ToJsonString());
            if (kind != "kl-mixture") Assert.Equal(true, (bool?)b["alignment"]!["drift"]!["per_shard"]);
        }
        if (kind == "kl-mixture")
        {
            // The shards' proposal counts add up to the single run's, and its rates follow from them; the set-up is the plan's, counted once.
            var (ma, mb) = (a["alignment"]!, b["alignment"]!);
            foreach (string key in new[] { "proposed", "envelope_violations", "sampling_network_evaluations", "acceptance_rate", "evaluations_per_accepted_sample", "plan_setup_network_evaluations", "components" })
                Assert.Equal(ma[key]!.ToJsonString(), mb[key]!.ToJsonString());
            Assert.True((long)mb["proposed"]! > 23, "the test needs rejections");
            Assert.Null(mb["setup_network_evaluations"]);
        }
    }

    /// <summary>
    /// The library's half of a sharded SMC run (DESIGN §10): blocks of systems run separately (in another order, written
    /// to files and read back, as shards and merge do) and combined through KlAlignment.Run equal the one-process run
    /// with the same fixed number of systems — samples bit for bit, estimates exactly — for a deterministic and a
    /// stochastic sampler; and the combination evaluates no potential.
    /// </summary>
    [Theory]
    [InlineData("ddpm")]
    [InlineData("ddim")]
    public void SystemBlocksRunSeparatelyCombineToTheOneProcessRun(string samplerName)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        var denoiser = sessions.Denoiser(model);
        var sampler = Sampler.Create(samplerName, model.Config, 6);
        var reward = (OnnxAlign.Rewards.LinearReward)OnnxAlign.Rewards.RewardSpec.Parse("channel-mean:0", denoiser.SampleShape, model.Directory);
        var request = new GenerationRequest { Count = 12, BatchSize = 4, Seed = 5 };
        var exact = new ExactTiltSettings { Smc = new SmcSettings { ParticlesPerSystem = 8 }, MinSystems = 2, MovesPerStage = 1 };
        var settings = new KlAlignmentSettings { Exact = exact };

        // The plan's pilot: the first MinSystems systems fix M.
        var pilot = KlAlignment.Run(denoiser, null, sampler, reward, 0.5, settings with { Exact = exact with { Systems = 100, Block = new SystemBlock(0, 2) } }, request);
        Assert.Null(pilot.Exact);
        Assert.Equal(2, pilot.Block!.Finished.Count);
        Assert.Empty(pilot.Samples.Samples);
        int m = ExactTilt.PlanSystems(pilot.Block.Finished, denoiser.SampleSize, exact with { Count = request.Count });
        Assert.InRange(m, 2, (exact with { Count = request.Count }).MaxSystems);
        m = Math.Max(m, 5);   // at least three blocks of unequal size

        var whole = KlAlignment.Run(denoiser, null, sampler, reward, 0.5, settings with { Exact = exact with { Systems = m } }, request).Exact!;
        Assert.Equal(m, whole.Systems.Count);
        string dir = TestSupport.TempDirectory();
        var systems = new Dictionary<int, SmcSystem>();
        foreach (int i in new[] { 2, 0, 1 })
        {
            var block = SystemBlock.Of(new Shard(i, 3), m);
            var ran = KlAlignment.Run(denoiser, null, sampler, reward, 0.5, settings with { Exact = exact with { Systems = m, Block = block } }, request).Block!;
            Assert.Equal(block, ran.Block);
            string folder = Path.Combine(dir, $"shard{i}");
            Directory.CreateDirectory(folder);
            SmcSystemFiles.Write(folder, ran, denoiser.SampleShape);
            var read = SmcSystemFiles.Read(folder);
            Assert.Equal(block, read.Block);
            for (int k = 0; k < read.Finished.Count; k++) systems[block.First + k] = read.Finished[k];
        }
        // A potential that would fail if the combination evaluated G: the systems carry theirs.
        var merged = KlAlignment.Run(denoiser, null, sampler, reward, 0.5, settings with { Exact = exact with { Systems = m } }, request,
                                     systems: new SmcSystemSet(systems, complete: true)).Exact!;
        Assert.Equal(whole.Samples, merged.Samples);
        Assert.Equal(whole.Picks, merged.Picks);
        Assert.Equal(whole.Particles.EffectiveSampleSize, merged.Particles.EffectiveSampleSize);
        Assert.Equal(whole.LogPartition, merged.LogPartition);
        Assert.Equal(whole.KlDivergence, merged.KlDivergence);
        Assert.Equal(whole.MeanPotential, merged.MeanPotential);
        Assert.Equal(whole.Potentials, merged.Potentials);
        Assert.Equal(whole.Particles.NetworkEvaluations, merged.Particles.NetworkEvaluations);
        // The stored potentials are G at each particle, as a second evaluation would find them.
        var (potential, _) = ExactTilt.TiltTarget(KlAlignment.TiltOf(reward, 0.5), 0);
        var again = potential.Evaluate(whole.Particles.Samples, whole.Particles.Count);
        for (int i = 0; i < again.Length; i++) if (double.IsFinite(whole.Particles.LogWeights[i])) Assert.Equal(again[i], whole.Potentials[i], 12);

        // A block that is missing is an error, not a reason to run it.
        systems.Remove(m - 1);
        var e = Assert.Throws<InvalidOperationException>(() => KlAlignment.Run(denoiser, null, sampler, reward, 0.5, settings with { Exact = exact with { Systems = m } }, request,
                                                                               systems: new SmcSystemSet(systems, complete: true)));
        Assert.Contains($"system {m - 1} is not among", e.Message);
    }

    /// <summary>
    /// Issue #20's SMC item: an exact method's plan fixes the SMC's systems (a pilot of the first ones) and its proposal;
    /// three shards run their blocks of systems in another order and the merge — which combines them, computes the
    /// estimates and resamples — equals the unsharded run of the plan byte for byte, with the same estimates.
    /// </summary>
    [Theory]
    [InlineData("exact-tilt")]
    [InlineData("exact-low-rank")]
    public void ThreeShardsOfAnSmcPlanMergeToThePlannedSingleRunByteForByte(string kind)
    {
        string[] options = kind == "exact-tilt"
            ? ["--reward", "channel-mean:0", "--lambda", "0.5"]
            : ["--reward", "max(channel-mean:0|brightness)", "--lambda", "0.5"];
        CheckSmcShards(TestSupport.Toy("gmm-image"), [.. options, "--count", "12", "--steps", "8", "--sampler", "ddpm", "--particles", "8", "--ess-per-sample", "2"], kind);
    }

    /// <summary>The same for a network reward (DESIGN §8's black-box tilt-SMC): the plan holds the fitted tilt, so no shard refits.</summary>
    [Fact]
    [Trait("Category", "Slow")]
    public void ThreeShardsOfABlackBoxPlanMergeToThePlannedSingleRunByteForByte()
    {
        string fashion = Path.Combine(TestSupport.RepositoryRoot, "models", "fashion");
        CheckSmcShards(fashion, ["--reward", $"onnx:{Path.Combine(fashion, "evaluator")}@Trouser", "--lambda", "1", "--count", "6", "--steps", "4", "--particles", "4",
                                 "--ess-per-sample", "2", "--pilot-samples", "16", "--pilot-rounds", "1", "--features", "pca:2"], "black-box");
    }

    private static void CheckSmcShards(string model, string[] options, string kind)
    {
        string dir = TestSupport.TempDirectory(), plan = Path.Combine(dir, "plan.json");
        var planned = CliTests.Onnxalign(["plan", model, .. options, "--out", plan]);
        Assert.True(planned.Code == 0, planned.Err);
        var smc = JsonNode.Parse(File.ReadAllText(plan))!["setup"]!["smc"]!;
        int systems = (int)smc["systems"]!;
        Assert.InRange(systems, 4, (int)smc["max_systems"]!);
        Assert.Equal(4, (int)smc["pilot_systems"]!);
        Assert.True((double)smc["pilot_effective_sample_size"]! > 0);
        Assert.True((long)smc["pilot_network_evaluations"]! > 0);
        if (kind == "exact-low-rank") Assert.Equal(64, smc["proposal_tilt"]!.AsArray().Count);
        if (kind == "black-box") Assert.Equal(32 * 32, smc["tilt_fit"]!["theta"]!.AsArray().Count);

        var single = CliTests.Onnxalign("generate", "--plan", plan, "--out", Path.Combine(dir, "single"));
        Assert.True(single.Code == 0, single.Err);
        foreach (int i in new[] { 2, 0, 1 })
        {
            var shard = CliTests.Onnxalign("generate", "--plan", plan, "--shard", $"{i}/3", "--out", Path.Combine(dir, $"shard{i}"), "--threads", "1");
            Assert.True(shard.Code == 0, shard.Err);
            Assert.DoesNotContain("fitting the proposal tilt", shard.Out);   // the plan's fit, not a shard's own
            // A shard holds its systems (particles, weights, potentials), not samples: the merge resamples.
            Assert.True(File.Exists(Path.Combine(dir, $"shard{i}", "systems.npy")) && File.Exists(Path.Combine(dir, $"shard{i}", "systems.json")));
            Assert.False(File.Exists(Path.Combine(dir, $"shard{i}", "samples.npy")));
        }
        var merged = CliTests.Onnxalign("merge", "--out", Path.Combine(dir, "merged"), Path.Combine(dir, "shard1"), Path.Combine(dir, "shard2"), Path.Combine(dir, "shard0"));
        Assert.True(merged.Code == 0, merged.Err);
        AssertSameFiles(Path.Combine(dir, "single"), Path.Combine(dir, "merged"));

        var a = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "single", "report.json")))!;
        var b = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "merged", "report.json")))!;
        Assert.Equal(a["run"]!["id"]!.ToJsonString(), b["run"]!["id"]!.ToJsonString());
        Assert.Equal((long)a["network_evaluations"]!, (long)b["network_evaluations"]!);
        Assert.Equal(systems, (int)b["alignment"]!["smc"]!["systems"]!);
        foreach (string key in new[] { "effective_sample_size", "effective_systems", "distinct_returned_samples" })
            Assert.Equal(a["alignment"]!["smc"]![key]!.ToJsonString(), b["alignment"]!["smc"]![key]!.ToJsonString());
        foreach (string key in new[] { "log_partition", "kl_divergence", "reward_after", "reward_of_returned_samples" })
            Assert.Equal(a["alignment"]![key]!["value"]?.ToJsonString() ?? a["alignment"]![key]!["mean"]!.ToJsonString(),
                         b["alignment"]![key]!["value"]?.ToJsonString() ?? b["alignment"]![key]!["mean"]!.ToJsonString());
        Assert.Equal(3, b["shards"]!.AsArray().Count);

        // Every system once: a missing or a repeated block is named, in one line, and nothing is written.
        var (start, length) = new Shard(1, 3).Range(systems);
        var missing = CliTests.Onnxalign("merge", "--out", Path.Combine(dir, "m"), Path.Combine(dir, "shard0"), Path.Combine(dir, "shard2"));
        Assert.Equal(2, missing.Code);
        Assert.Contains($"1 of 3 shards are missing: 1 (systems [{start}, {start + length}) of {systems})", missing.Err);
        Assert.Single(missing.Err.Trim().Split('\n'));
        var twice = CliTests.Onnxalign("merge", "--out", Path.Combine(dir, "m"), Path.Combine(dir, "shard0"), Path.Combine(dir, "shard1"), Path.Combine(dir, "shard1"), Path.Combine(dir, "shard2"));
        Assert.Equal(2, twice.Code);
        Assert.Contains($"shard 1 (systems [{start}, {start + length}) of {systems}) is given twice", twice.Err);
        Assert.False(Directory.Exists(Path.Combine(dir, "m")));
    }

    /// <summary>A killed SMC shard resumes its own block (finished systems kept in .partial/) to the uninterrupted shard's files.</summary>
    [Fact]
    public void AKilledSmcShardResumesToTheUninterruptedShard()
    {
        string root = TestSupport.TempDirectory(), plan = Path.Combine(root, "plan.json"), whole = Path.Combine(root, "whole"), resumed = Path.Combine(root, "resumed");
        var planned = CliTests.Onnxalign("plan", TestSupport.Toy("tiny-unet"), "--reward", "brightness", "--lambda", "0.05", "--count", "32", "--steps", "60",
                                         "--particles", "8", "--max-particles-per-sample", "4", "--ess-per-sample", "100", "--seed", "2", "--out", plan);
        Assert.True(planned.Code == 0, planned.Err);
        Assert.Equal(16, (int)JsonNode.Parse(File.ReadAllText(plan))!["setup"]!["smc"]!["systems"]!);   // the budget: the target is out of reach
        string[] shard = ["generate", "--plan", plan, "--shard", "1/2", "--threads", "1"];
        var (code, _, stderr) = CliTests.Onnxalign([.. shard, "--out", whole]);
        Assert.True(code == 0, stderr);
        using (var process = CliTests.StartAndWaitFor(Path.Combine(resumed, ".partial"), "smc_system_*.json", 2, [.. shard, "--out", resumed]))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }
        Assert.False(File.Exists(Path.Combine(resumed, "systems.json")));
        (code, var stdout, stderr) = CliTests.Onnxalign([.. shard, "--out", resumed, "--resume"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("resuming:", stdout);
        AssertSameFiles(whole, resumed);
    }

    [Fact]
    public void PlanAndPlannedRunsRefuseWhatTheyCannotDo()
    {
        string dir = TestSupport.TempDirectory();
        string plan = Path.Combine(dir, "plan.json");
        // Best-of-N is not shardable yet; an unplanned exact run is sharded through a plan (its systems are a global set-up).
        string fashion = Path.Combine(TestSupport.RepositoryRoot, "models", "fashion");
        var bestOf = CliTests.Onnxalign("plan", fashion, "--reward", $"onnx:{Path.Combine(fashion, "evaluator")}@Trouser", "--lambda", "1", "--black-box", "best-of-n", "--out", plan);
        Assert.Equal(2, bestOf.Code);
        Assert.Contains("best-of-N cannot be split into shards yet", bestOf.Err);
        Assert.False(File.Exists(plan));
        var unplanned = CliTests.Onnxalign("generate", TestSupport.Toy("gmm-image"), "--reward", "channel-mean:0", "--lambda", "1", "--shard", "0/2", "--out", Path.Combine(dir, "x"));
        Assert.Equal(2, unplanned.Code);
        Assert.Contains("make a plan", unplanned.Err);
        Assert.Equal(2, CliTests.Onnxalign("plan", TestSupport.Toy("gmm-image"), "--shard", "0/2", "--out", plan).Code);

        Assert.Equal(0, CliTests.Onnxalign("plan", TestSupport.Toy("gmm-image"), "--count", "4", "--steps", "5", "--out", plan).Code);
        var again = CliTests.Onnxalign("plan", TestSupport.Toy("gmm-image"), "--count", "4", "--steps", "5", "--out", plan);
        Assert.Equal(2, again.Code);
        Assert.Contains("exists; pass --overwrite", again.Err);
        var count = CliTests.Onnxalign("generate", "--plan", plan, "--count", "5", "--out", Path.Combine(dir, "x"));
        Assert.Equal(2, count.Code);
        Assert.Contains("--count: comes from --plan", count.Err);
        var auto = CliTests.Onnxalign("generate", "--plan", plan, "--shard", "auto", "--out", Path.Combine(dir, "x"));
        Assert.Equal(2, auto.Code);
        Assert.Contains("not in an array job", auto.Err);
        Assert.False(Directory.Exists(Path.Combine(dir, "x")));

        Assert.Equal(0, CliTests.Onnxalign("generate", "--plan", plan, "--shard", "0/2", "--out", Path.Combine(dir, "s0")).Code);
        var missing = CliTests.Onnxalign("merge", "--out", Path.Combine(dir, "m"), Path.Combine(dir, "s0"));
        Assert.Equal(2, missing.Code);
        Assert.Contains("1 of 2 shards are missing: 1", missing.Err);
        Assert.False(Directory.Exists(Path.Combine(dir, "m")));
        var running = Path.Combine(dir, "s1");
        Directory.CreateDirectory(Path.Combine(running, ".partial"));
        File.WriteAllText(Path.Combine(running, ".partial", "run.json"), "{}");
        var unfinished = CliTests.Onnxalign("merge", "--out", Path.Combine(dir, "m"), Path.Combine(dir, "s0"), running);
        Assert.Equal(2, unfinished.Code);
        Assert.Contains("an interrupted or running shard", unfinished.Err);
    }

    [Fact]
    public void APlanOfAnAlignedTiltRecordsItsThetaAndRefusesAChangedOne()
    {
        // align writes θ (the constrained dual's solution, computed once); a plan of its tilt is shared by every shard.
        string dir = TestSupport.TempDirectory();
        string theta = Path.Combine(dir, "theta.npy");
        NpyFile.Write(theta, Enumerable.Repeat(0.3f, 64).ToArray(), [1, 8, 8]);
        string plan = Path.Combine(dir, "plan.json");
        var made = CliTests.Onnxalign("plan", TestSupport.Toy("gmm-image"), "--tilt", theta, "--tilt-mode", "fast", "--logz-samples", "0", "--count", "6", "--steps", "5", "--out", plan);
        Assert.True(made.Code == 0, made.Err);
        Assert.Equal(PlanFile.FileHash(theta), (string?)JsonNode.Parse(File.ReadAllText(plan))!["setup"]!["inputs"]!["tilt"]);
        var shard = CliTests.Onnxalign("generate", "--plan", plan, "--shard", "1/2", "--out", Path.Combine(dir, "s1"));
        Assert.True(shard.Code == 0, shard.Err);
        NpyFile.Write(theta, Enumerable.Repeat(0.4f, 64).ToArray(), [1, 8, 8]);
        var changed = CliTests.Onnxalign("generate", "--plan", plan, "--shard", "0/2", "--out", Path.Combine(dir, "s0"));
        Assert.Equal(2, changed.Code);
        Assert.Contains("changed since the plan was made", changed.Err);
    }

    /// <summary>
    /// Issue #20: align's dual inside a plan. plan align runs the constrained dual once (the global set-up, DESIGN §10),
    /// writes θ beside the plan (hashed in it) and the dual's block in its set-up; two shards merge into the unsharded
    /// planned run byte for byte (in the fast mode equal to align's own samples), and the merged report carries the dual's block. An
    /// edited plan and a changed θ are refused; an infeasible dual writes no plan (exit 4).
    /// </summary>
    [Theory]
    [InlineData("fast")]
    [InlineData("exact")]
    public void APlanOfAlignsDualShardsAndMergesIntoTheUnshardedRun(string mode)
    {
        string dir = TestSupport.TempDirectory();
        string plan = Path.Combine(dir, "plan.json"), theta = Path.Combine(dir, "plan.theta.npy");
        string[] options = ["--constraint", "brightness>=mean+0.5std", "--samples-per-iteration", "200", "--iterations", "10", "--tilt-mode", mode,
                            "--count", "6", "--batch", "4", "--steps", "8", "--seed", "3", "--sampler", "ddpm"];
        var made = CliTests.Onnxalign(["plan", "align", TestSupport.Toy("gmm-image"), .. options, "--out", plan]);
        Assert.True(made.Code == 0, made.Err);
        var written = JsonNode.Parse(File.ReadAllText(plan))!;
        Assert.Equal(Path.GetFullPath(theta), (string?)written["settings"]!["tilt"]);
        Assert.Equal(PlanFile.FileHash(theta), (string?)written["setup"]!["inputs"]!["tilt"]);
        var dual = written["setup"]!["align"]!["constrained"]!;
        Assert.Equal("brightness>=mean+0.5std", (string?)dual["constraints"]![0]!["text"]);

        var whole = CliTests.Onnxalign("generate", "--plan", plan, "--out", Path.Combine(dir, "whole"));
        Assert.True(whole.Code == 0, whole.Err);
        for (int k = 0; k < 2; k++)
        {
            var shard = CliTests.Onnxalign("generate", "--plan", plan, "--shard", $"{k}/2", "--out", Path.Combine(dir, $"s{k}"));
            Assert.True(shard.Code == 0, shard.Err);
        }
        var merged = CliTests.Onnxalign("merge", "--out", Path.Combine(dir, "merged"), Path.Combine(dir, "s0"), Path.Combine(dir, "s1"));
        Assert.True(merged.Code == 0, merged.Err);
        AssertSameFiles(Path.Combine(dir, "whole"), Path.Combine(dir, "merged"));
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "merged", "report.json")))!;
        Assert.True(JsonNode.DeepEquals(dual, report["constrained"]), report["constrained"]?.ToJsonString());

        // The same command line through align: the same dual (θ) and the same samples.
        var aligned = CliTests.Onnxalign(["align", TestSupport.Toy("gmm-image"), .. options, "--out", Path.Combine(dir, "align")]);
        Assert.True(aligned.Code == 0, aligned.Err);
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "align", "theta.npy")), File.ReadAllBytes(theta));
        // The fast tilt's samples are align's too; the exact tilt's plan fixes the SMC's systems, which align's adaptive run does not.
        if (mode == "fast")
            Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "align", "samples.npy")), File.ReadAllBytes(Path.Combine(dir, "merged", "samples.npy")));
        else
            Assert.NotNull(written["setup"]!["smc"]);

        // An edited plan (its dual's block) and a changed θ are refused before a shard writes.
        string edited = Path.Combine(dir, "edited.json");
        var tampered = JsonNode.Parse(File.ReadAllText(plan))!;
        tampered["setup"]!["align"]!["constrained"]!["constraints"]![0]!["multiplier"] = 0.0;
        File.WriteAllText(edited, tampered.ToJsonString());
        var refused = CliTests.Onnxalign("generate", "--plan", edited, "--shard", "0/2", "--out", Path.Combine(dir, "e0"));
        Assert.Equal(2, refused.Code);
        Assert.Contains("edited after it was written", refused.Err);
        NpyFile.Write(theta, Enumerable.Repeat(0.1f, 64).ToArray(), [1, 8, 8]);
        var changed = CliTests.Onnxalign("generate", "--plan", plan, "--shard", "0/2", "--out", Path.Combine(dir, "c0"));
        Assert.Equal(2, changed.Code);
        Assert.Contains("changed since the plan was made", changed.Err);
        Assert.False(Directory.Exists(Path.Combine(dir, "e0")) || Directory.Exists(Path.Combine(dir, "c0")));

        // Constraints that cannot be met together: exit 4, and neither a plan nor a θ.
        string never = Path.Combine(dir, "never.json");
        var infeasible = CliTests.Onnxalign("plan", "align", TestSupport.Toy("gmm-image"), "--constraint", "brightness>=0.5", "--constraint", "brightness<=0.2",
                                            "--samples-per-iteration", "100", "--steps", "5", "--tilt-mode", "fast", "--out", never);
        Assert.Equal(4, infeasible.Code);
        Assert.Contains("cannot be met together", infeasible.Err);
        Assert.False(File.Exists(never) || File.Exists(Path.Combine(dir, "never.theta.npy")));
    }

    /// <summary>A plan of a preference fit (plan align --preferences): the fit runs once, and the planned run's report carries its block.</summary>
    [Fact]
    public void APlanOfAPreferenceFitCarriesItsBlock()
    {
        string dir = TestSupport.TempDirectory(), plan = Path.Combine(dir, "plan.json");
        var random = new Random(5);
        float[] Draw() => Enumerable.Range(0, 40 * 64).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var (a, b) = (Draw(), Draw());
        Directory.CreateDirectory(Path.Combine(dir, "prefs", "preferred"));
        Directory.CreateDirectory(Path.Combine(dir, "prefs", "rejected"));
        NpyFile.Write(Path.Combine(dir, "prefs", "preferred", "samples.npy"), a, [40, 1, 8, 8]);
        NpyFile.Write(Path.Combine(dir, "prefs", "rejected", "samples.npy"), b, [40, 1, 8, 8]);
        var made = CliTests.Onnxalign("plan", "align", TestSupport.Toy("gmm-image"), "--preferences", Path.Combine(dir, "prefs"), "--l2", "0.1",
                                      "--tilt-mode", "fast", "--count", "4", "--steps", "5", "--out", plan);
        Assert.True(made.Code == 0, made.Err);
        Assert.Contains("held-out", made.Out);
        var run = CliTests.Onnxalign("generate", "--plan", plan, "--out", Path.Combine(dir, "run"));
        Assert.True(run.Code == 0, run.Err);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "run", "report.json")))!;
        Assert.Equal(32, (int)report["preferences"]!["train_count"]!);
        Assert.Equal(Path.Combine(dir, "prefs"), (string?)report["preferences"]!["folder"]);
        Assert.NotNull(report["alignment"]);
    }

    /// <summary>
    /// The target of issue #20: a one-node Slurm cluster started on this machine by the project's script, a 4-task
    /// array (plan job → array → merge job with dependencies), and its merge equal to the single run, byte for byte.
    /// </summary>
    [Fact]
    [Trait("Category", "Slow")]
    public void FourSlurmArrayTasksAndTheMergeJobEqualTheSingleRun()
    {
        string scripts = Path.Combine(TestSupport.RepositoryRoot, "tools", "cluster", "slurm");
        var setup = Run("bash", Path.Combine(scripts, "setup.sh"));
        Assert.True(setup.Code == 0, $"tools/cluster/slurm/setup.sh failed (it needs root and Debian's slurm-wlm/munge packages):\n{setup.Output}");

        string dir = TestSupport.TempDirectory();
        string[] options = ["--count", "30", "--steps", "15", "--sampler", "ddpm", "--reward", "channel-mean:0", "--lambda", "0.5", "--tilt-mode", "fast", "--logz-samples", "0"];
        var single = CliTests.Onnxalign(["generate", TestSupport.Toy("gmm-image"), .. options, "--out", Path.Combine(dir, "single")]);
        Assert.True(single.Code == 0, single.Err);

        string cli = $"dotnet {Path.Combine(AppContext.BaseDirectory, "OnnxAlign.Cli.dll")}";
        var submit = Run("bash", [Path.Combine(scripts, "submit.sh"), "--wait", Path.Combine(dir, "slurm"), "4", TestSupport.Toy("gmm-image"), .. options],
                         ("ONNXALIGN", cli));
        string logs = string.Join("\n", Directory.Exists(Path.Combine(dir, "slurm", "logs"))
            ? Directory.GetFiles(Path.Combine(dir, "slurm", "logs")).Select(f => $"--- {Path.GetFileName(f)}\n{Tail(File.ReadAllText(f))}") : []);
        Assert.True(submit.Code == 0, $"submit.sh failed:\n{submit.Output}\n{logs}");
        string merged = Path.Combine(dir, "slurm", "merged");
        Assert.True(File.Exists(Path.Combine(merged, "report.json")), $"no merged report:\n{submit.Output}\n{logs}");
        AssertSameFiles(Path.Combine(dir, "single"), merged);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(merged, "report.json")))!;
        Assert.Equal(4, (int)report["merge"]!["shards"]!);
        Assert.Equal(30, (int)report["shard"]!["samples"]!);
        // Each task ran as its own Slurm array task (shard k from SLURM_ARRAY_TASK_ID = k).
        for (int k = 0; k < 4; k++) Assert.Contains($"shard {k}/4 (from slurm)", File.ReadAllText(Path.Combine(dir, "slurm", "logs", $"shard_{k}.out")));
    }

    private static string Tail(string text) => text.Length <= 2000 ? text : text[^2000..];

    private static (int Code, string Output) Run(string file, string[] args, params (string Name, string Value)[] environment)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = TestSupport.RepositoryRoot };
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var (name, value) in environment) start.Environment[name] = value;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(600_000)) { process.Kill(true); return (-1, "timed out after 10 minutes\n" + stdout.Result + stderr.Result); }
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    private static (int Code, string Output) Run(string file, string arg) => Run(file, [arg]);
}
