using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Evaluation;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>
/// verify's library side (issue #16): the statistics chosen from the reward's structure, who owns the evaluator they
/// read, and the typed <c>audits</c> block, which is what the CLI writes into report.json.
/// </summary>
public sealed class AuditLibraryTests
{
    private static string Fashion => Path.Combine(TestSupport.RepositoryRoot, "models", "fashion");
    private static readonly int[] FashionShape = [1, 32, 32];

    [Fact]
    public void AClassRewardIsAuditedOnEveryClassLogitAndTheEvaluatorsRate()
    {
        var reward = RewardSpec.ParseLinear("class:Trouser", FashionShape, Fashion);
        string[] classes = RewardSpec.ClassNames(Path.Combine(Fashion, "classifier"), Fashion);
        Assert.Equal(10, classes.Length);
        using var set = TiltAudit.StatisticsFor(reward, FashionShape, Fashion);
        var names = set.Statistics.Select(s => s.Name).ToArray();
        string[] expected =
        [
            "class:Trouser", "rate:class:Trouser", .. classes.Where(c => c != "Trouser").Select(c => $"class:{c}"), "brightness", "evaluator-rate:Trouser",
        ];
        Assert.Equal(expected, names);
        Assert.NotNull(set.Evaluator);

        // Each logit statistic is that class's logit; the rates are indicators, and the classifier's agrees with the logits' argmax.
        var x = PipelineTests.Noise(6, 1024, seed: 3).Select(v => Math.Clamp(v * 0.5f, -1f, 1f)).ToArray();
        var values = set.Statistics.ToDictionary(s => s.Name, s => s.Evaluate(x, 6));
        var logits = classes.Select(c => RewardSpec.ParseLinear($"class:{c}", FashionShape, Fashion).EvaluateBatch(x)).ToArray();
        for (int c = 0; c < classes.Length; c++)
            for (int i = 0; i < 6; i++) Assert.Equal(logits[c][i], values[$"class:{classes[c]}"][i], 1e-9);
        for (int i = 0; i < 6; i++)
        {
            int argmax = Enumerable.Range(0, classes.Length).MaxBy(c => logits[c][i]);
            Assert.Equal(argmax == 1 ? 1.0 : 0.0, values["rate:class:Trouser"][i]);
            Assert.Contains(values["evaluator-rate:Trouser"][i], new[] { 0.0, 1.0 });
            Assert.Equal(x.AsSpan(i * 1024, 1024).ToArray().Average(), values["brightness"][i], 1e-6);
        }

        // The set owns the evaluator: once disposed, the statistic that reads it refuses rather than open a new session.
        set.Dispose();
        Assert.Throws<ObjectDisposedException>(() => set.Statistics[^1].Evaluate(x, 6));
    }

    [Fact]
    public void OtherRewardsAreAuditedOnThemselvesAndTheBrightnessOnce()
    {
        var brightness = RewardSpec.ParseLinear("brightness", FashionShape, Fashion);
        using (var set = TiltAudit.StatisticsFor(brightness, FashionShape, Fashion))
        {
            Assert.Equal(new[] { "brightness" }, set.Statistics.Select(s => s.Name));
            Assert.Null(set.Evaluator);
        }
        var channel = RewardSpec.ParseLinear("channel-mean:0", FashionShape, Fashion);
        using (var set = TiltAudit.StatisticsFor(channel, FashionShape, Fashion))
            Assert.Equal(new[] { "channel-mean:0", "brightness" }, set.Statistics.Select(s => s.Name));

        // Two statistics of one name cannot both be reported: refused before any sample is drawn.
        var twice = new[] { new AuditStatistic("r", (_, n) => new double[n]), new AuditStatistic("r", (_, n) => new double[n]) };
        Assert.Equal("statistics", Assert.Throws<ArgumentException>(() => new AuditStatisticSet(twice)).ParamName);
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        using var denoiser = model.OpenDenoiser();
        Assert.Equal("statistics", Assert.Throws<ArgumentException>(() =>
            TiltAudit.Run(denoiser, null, Sampler.Create("ddpm", model.Config, 2), [[1f, 0f]], twice, new AuditSettings { BaseCount = 4, Count = 4 })).ParamName);
    }

    /// <summary>
    /// The typed audit block is report.json's: <c>verify --out</c> on the toy writes, node for node (but the runs'
    /// wall times), what <see cref="AuditReport.Of"/> makes of the library's own audit with the same settings, and its
    /// network evaluations count the shared base run once.
    /// </summary>
    [Fact]
    public void TheTypedAuditBlockIsWhatVerifyWrites()
    {
        string dir = TestSupport.TempDirectory(), output = Path.Combine(dir, "audit");
        NpyFile.Write(Path.Combine(dir, "a.npy"), [0f, -1f], [2]);
        string spec = $"direction:{Path.Combine(dir, "a.npy")}";
        var (code, _, stderr) = CliTests.Onnxalign("verify", TestSupport.Toy("gmm2d"), "--reward", spec, "--lambda", "1,0.5", "--sampler", "ddpm",
            "--steps", "20", "--base-count", "512", "--count", "64", "--particles", "16", "--out", output);
        Assert.True(code == 0, stderr);
        var written = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!;

        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        using var denoiser = model.OpenDenoiser();
        var reward = RewardSpec.ParseLinear(spec, denoiser.SampleShape, model.Directory);
        using var statistics = TiltAudit.StatisticsFor(reward, denoiser.SampleShape, model.Directory);
        double[] lambdas = [1, 0.5];
        var settings = new AuditSettings
        {
            BaseCount = 512, Count = 64, BatchSize = 64, Seed = 0,
            ExactSettings = new ExactTiltSettings { Smc = new SmcSettings { ParticlesPerSystem = 16 } },
        };
        var results = TiltAudit.Run(denoiser, model.DataRange, Sampler.Create("ddpm", model.Config, 20), lambdas.Select(l => reward.Tilt(l)).ToArray(),
                                    statistics.Statistics, settings);
        var typed = new JsonArray(results.Select((r, k) => ReportJson.ToNode(AuditReport.Of(r, lambdas[k]))).ToArray());

        var audits = written["audits"]!.AsArray();
        Assert.Equal(2, audits.Count);
        foreach (var node in new[] { audits, typed })
            foreach (var run in node.SelectMany(a => a!["runs"]!.AsArray())) run!.AsObject().Remove("seconds");
        Assert.True(JsonNode.DeepEquals(typed, audits), $"library:\n{typed}\nreport.json:\n{audits}");
        Assert.Equal(new[] { "lambda", "z_threshold", "ground_truth", "runs" }, audits[0]!.AsObject().Select(p => p.Key));
        Assert.Equal(new[] { spec, "brightness" }, audits[0]!["ground_truth"]!["statistics"]!.AsObject().Select(p => p.Key));   // names as they are, not snake_cased
        Assert.Equal(new[] { "value", "standard_error", "z" }, audits[0]!["runs"]![0]!["statistics"]![spec]!.AsObject().Select(p => p.Key));

        long expected = results[0].Truth.NetworkEvaluations + results.Sum(r => r.Runs.Sum(run => run.NetworkEvaluations));
        Assert.Equal(expected, TiltAudit.NetworkEvaluations(results));
        Assert.Equal(expected, (long)written["network_evaluations"]!);
    }
}
