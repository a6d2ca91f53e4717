using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment.Prox;
using OnnxAlign.Evaluation;
using OnnxAlign.Guidance;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign bench</c>: speed ratios measured in one run (never asserted in tests). Untilted and tilted generation
/// alternate, repeat after repeat, so drift of the machine affects both alike; the median of each is reported.
/// </summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Model to time.", DefaultValueFactory = _ => "models/toy/tiny-unet" };
        var steps = new Option<int>("--steps") { Description = "Steps per run.", DefaultValueFactory = _ => 20 };
        var batch = new Option<int>("--batch") { Description = "Samples per run (one batch).", DefaultValueFactory = _ => 16 };
        var repeats = new Option<int>("--repeats") { Description = "Timed repeats of each variant.", DefaultValueFactory = _ => 5 };
        var output = new Option<string?>("--out") { Description = "Also write the figures as JSON to this file." };
        var torch = new Option<string?>("--torch")
        {
            Description = "Also time tools/bench/torch_loop.py (the same UNet and DDIM loop in PyTorch) for equal work: with no value on the model's own ONNX weights, or on the given .onnx file or training checkpoint (ddpm_ema.pt).",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var sweepBatches = new Option<bool>("--throughput") { Description = "Also measure throughput for batch 1…256 with all cores and with one thread." };
        var mixture = new Option<bool>("--kl-mixture") { Description = "Instead: evaluations and accuracy of the KL mixture vs importance resampling and best-of-N across λ, on a 2-d toy with known law (models/toy/gmm2d)." };
        var blackBox = new Option<bool>("--black-box") { Description = "Instead: DESIGN §8's methods on a network reward (--reward onnx:…) at equal network evaluations against a high-budget importance-weighted reference, across --lambdas (DDPM, --steps)." };
        var reward = new Option<string>("--reward") { Description = "--black-box: the network reward.", DefaultValueFactory = _ => "onnx:models/fashion/evaluator@Trouser" };
        var lambdas = new Option<string>("--lambdas") { Description = "--black-box: comma-separated λ values.", DefaultValueFactory = _ => "1,0.3,0.1" };
        var particles = new Option<int>("--particles") { Description = "--black-box: tilt-SMC's and tilt-IS's particles (the others get their network evaluations).", DefaultValueFactory = _ => 256 };
        var referenceCount = new Option<int>("--reference") { Description = "--black-box: base samples of the reference.", DefaultValueFactory = _ => 8192 };
        var plot = new Option<string?>("--plot") { Description = "--black-box: also plot ESS per network evaluation against λ to this PNG." };
        var command = new Command("bench", "Time tilted against untilted sampling and the sampler's overhead over the network.")
            { model, steps, batch, repeats, output, mixture, torch, sweepBatches, blackBox, reward, lambdas, particles, referenceCount, plot };
        var runtime = new RuntimeOptions();
        foreach (var option in runtime.All) command.Options.Add(option);
        command.SetAction(parse =>
        {
            if (parse.GetValue(mixture))
            {
                var result = MixtureBench.Run(parse.GetValue(model)!, 2000);
                if (parse.GetValue(output) is { } file)
                    ReportJson.WriteFile(file, new JsonObject { ["kl_mixture"] = ReportJson.ToNode(result.Rows) });
                return 0;
            }
            if (parse.GetValue(blackBox))
            {
                var values = parse.GetValue(lambdas)!.Split(',').Select(v => OnnxAlign.Core.Numbers.TryParse(v, out double l) && l > 0 && double.IsFinite(l) ? l
                    : throw new UsageException($"--lambdas '{parse.GetValue(lambdas)}': expected comma-separated values > 0")).ToArray();
                var settings = new BlackBoxBenchmarkSettings
                {
                    Lambdas = values, Steps = GenerateCommand.Positive(parse.GetValue(steps), "--steps"), Particles = parse.GetValue(particles),
                    ReferenceCount = GenerateCommand.Positive(parse.GetValue(referenceCount), "--reference"), BestOf = 16, Seed = 0,
                };
                var result = BlackBoxBench.Run(parse.GetValue(model)!, parse.GetValue(reward)!, settings, runtime.For(parse), parse.GetValue(plot));
                if (parse.GetValue(output) is { } file) ReportJson.WriteFile(file, new JsonObject { ["black_box"] = ReportJson.ToNode(result) });
                return 0;
            }
            int s = GenerateCommand.Positive(parse.GetValue(steps), "--steps");
            int b = GenerateCommand.Positive(parse.GetValue(batch), "--batch");
            int r = GenerateCommand.Positive(parse.GetValue(repeats), "--repeats");
            var located = DiffusionModel.Locate(parse.GetValue(model)!);
            var options = runtime.For(parse);
            using var denoiser = located.OpenDenoiser(options);
            var sampler = Sampler.Create("ddim", located.Config, s);
            var tilt = new LinearTilt(denoiser, RewardSpec.ParseLinear("brightness", denoiser.SampleShape, located.Directory).Tilt(0.05));
            var request = new GenerationRequest { Count = b, BatchSize = b, Seed = 1 };

            Generation.Run(denoiser, sampler, request);  // warm-up: session initialisation, buffers
            Generation.Run(tilt, sampler, request);
            var plain = new List<double>();
            var tilted = new List<double>();
            var network = new List<double>();
            for (int i = 0; i < r; i++)
            {
                var a = Generation.Run(denoiser, sampler, request);
                plain.Add(a.TotalTime.TotalSeconds);
                network.Add(a.ModelTime.TotalSeconds);
                tilted.Add(Generation.Run(tilt, sampler, request).TotalTime.TotalSeconds);
            }
            double plainMedian = Median(plain), tiltedMedian = Median(tilted), networkMedian = Median(network);
            // The floor: the same number of bare session.Run calls on the same pre-bound batch.
            denoiser.TimeBareRuns(b, 2);
            double bareMedian = Median(Enumerable.Range(0, r).Select(_ => denoiser.TimeBareRuns(b, s).TotalSeconds).ToList());

            // The prox stage on the same batch, image model in [−1, 1] (box on), one reward per oracle structure.
            var baseSamples = Generation.Run(denoiser, sampler, request).Samples;
            double perEvaluation = networkMedian / (s * b);
            var proxFigures = new JsonArray();
            foreach (var (spec, lambda) in ProxWorkloads(denoiser.SampleShape))
            {
                var oracle = new ProxOracle(RewardSpec.Parse(spec, denoiser.SampleShape, located.Directory),
                    new ProxSettings { Lambda = lambda, Box = ImageFiles.IsImage(denoiser.SampleShape) ? ValueBox.Pixels : null });
                ProxStage.Apply(oracle, baseSamples);  // warm-up
                var times = Enumerable.Range(0, r).Select(_ => ProxStage.Apply(oracle, baseSamples).Time.TotalSeconds).ToList();
                double median = Median(times), perSample = median / b;
                proxFigures.Add(new JsonObject
                {
                    ["reward"] = spec, ["lambda"] = lambda, ["algorithm"] = oracle.Method,
                    ["samples_per_second"] = b / median, ["per_sample_over_network_evaluation"] = perSample / perEvaluation,
                });
            }
            var figures = new JsonObject
            {
                ["model"] = located.OnnxPath,
                ["machine"] = $"{Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}",
                ["device"] = denoiser.Device,
                ["onnxruntime"] = Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetVersionString(),
                ["host_buffers"] = denoiser.HostMemory,
                ["network_element_type"] = denoiser.SampleElementType.ToString(),
                ["steps"] = s,
                ["batch"] = b,
                ["repeats"] = r,
                ["untilted_seconds_median"] = plainMedian,
                ["tilted_seconds_median"] = tiltedMedian,
                ["network_seconds_median"] = networkMedian,
                ["tilted_over_untilted"] = tiltedMedian / plainMedian,
                ["sampling_over_network"] = plainMedian / networkMedian,
                ["samples_per_second_untilted"] = b / plainMedian,
                ["prox"] = proxFigures,
                ["bare_run_loop_seconds_median"] = bareMedian,
                ["sampling_over_bare_run_loop"] = plainMedian / bareMedian,
            };
            if (parse.GetValue(sweepBatches)) figures["throughput"] = Throughput(located, sampler, s, options);
            figures["peak_working_set_mb"] = System.Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0;
            if (parse.GetResult(torch) is not null)
                figures["pytorch"] = TorchComparison(parse.GetValue(torch) is { Length: > 0 } weights ? weights : located.OnnxPath, denoiser.Device, s, b, r, plainMedian);
            Console.WriteLine($"{located.OnnxPath}: DDIM {s} steps, batch {b}, {r} repeats (medians), device {denoiser.Device} (host buffers {denoiser.HostMemory})");
            Console.WriteLine($"  untilted              {plainMedian * 1000,9:F1} ms   ({b / plainMedian:F1} samples/s)");
            Console.WriteLine($"  tilted (exact)        {tiltedMedian * 1000,9:F1} ms");
            Console.WriteLine($"  network alone         {networkMedian * 1000,9:F1} ms");
            Console.WriteLine($"  tilted / untilted     {tiltedMedian / plainMedian,9:F3}   (target ≤ 1.05)");
            Console.WriteLine($"  sampling / network    {plainMedian / networkMedian,9:F3}");
            Console.WriteLine($"  bare Run loop         {bareMedian * 1000,9:F1} ms   (sampling / bare loop {plainMedian / bareMedian:F3}, target ≤ 1.05)");
            Console.WriteLine($"  peak working set      {figures["peak_working_set_mb"]!.GetValue<double>(),9:F0} MB");
            Console.WriteLine($"  prox stage ({Environment.ProcessorCount} workers; per sample vs one network evaluation per sample):");
            foreach (var p in proxFigures)
                Console.WriteLine($"    {p!["reward"],-26} λ={p["lambda"]!.GetValue<double>(),-9:G3} {p["algorithm"],-28} {p["samples_per_second"]!.GetValue<double>(),9:F1} samples/s   {p["per_sample_over_network_evaluation"]!.GetValue<double>(),8:F2}×");
            if (parse.GetValue(output) is { } path)
                ReportJson.WriteFile(path, figures);
            return 0;
        });
        return command;
    }

    /// <summary>Samples per second for batch 1…256, with all cores and with one intra-op thread (DDIM, the bench's steps).</summary>
    private static JsonArray Throughput(DiffusionModel located, Sampler sampler, int steps, DenoiserOptions options)
    {
        var rows = new JsonArray();
        Console.WriteLine($"  throughput (DDIM {steps} steps; samples/s):");
        foreach (int? t in new[] { options.IntraOpThreads, 1 })
        {
            using var d = located.OpenDenoiser(options with { IntraOpThreads = t });
            foreach (int batch in new[] { 1, 4, 16, 64, 256 })
            {
                var request = new GenerationRequest { Count = batch, BatchSize = batch, Seed = 1 };
                Generation.Run(d, sampler, request);
                var times = Enumerable.Range(0, 3).Select(_ => Generation.Run(d, sampler, request).TotalTime.TotalSeconds).ToList();
                double perSecond = batch / Median(times);
                rows.Add(new JsonObject { ["threads"] = t ?? Environment.ProcessorCount, ["batch"] = batch, ["samples_per_second"] = perSecond });
                Console.WriteLine($"    threads {t ?? Environment.ProcessorCount,2}  batch {batch,4}  {perSecond,10:F1}");
            }
        }
        return rows;
    }

    /// <summary>
    /// Runs tools/bench/torch_loop.py (Debian's python3 with torch, tools/train/setup.sh) for equal work and compares:
    /// the torch UNet takes its weights from <paramref name="weights"/>, an ONNX export (the benched model's own by
    /// default) or a training checkpoint, and runs on the bench's device.
    /// </summary>
    private static JsonObject TorchComparison(string weights, string device, int steps, int batch, int repeats, double onnxAlignSeconds)
    {
        string script = Path.Combine("tools", "bench", "torch_loop.py");
        if (!File.Exists(script) || !File.Exists(weights))
            throw new UsageException($"--torch {weights}: needs {script} and that file (run from the repository root)");
        bool onnx = weights.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase);
        // Debian's python3 by default (tools/train/setup.sh); ONNXALIGN_PYTHON names another (a GPU image's torch).
        string python = Environment.GetEnvironmentVariable("ONNXALIGN_PYTHON") is { Length: > 0 } p ? p : "/usr/bin/python3";
        var start = new System.Diagnostics.ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { script, onnx ? "--onnx" : "--checkpoint", weights, "--device", device.StartsWith("cuda", StringComparison.Ordinal) ? device : "cpu",
                                  "--steps", steps.ToString(CultureInfo.InvariantCulture), "--batch", batch.ToString(CultureInfo.InvariantCulture), "--repeats", repeats.ToString(CultureInfo.InvariantCulture) })
            start.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(start) ?? throw new UsageException($"--torch: cannot start {python} (run tools/train/setup.sh, or set ONNXALIGN_PYTHON)");
        string stdout = process.StandardOutput.ReadToEnd(), stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new UsageException($"--torch: torch_loop.py failed: {stderr.Trim().Split('\n').LastOrDefault()}");
        var result = JsonNode.Parse(stdout.Trim().Split('\n').Last())!.AsObject();
        double torchSeconds = result["seconds_median"]!.GetValue<double>();
        Console.WriteLine($"  PyTorch {result["torch"]} ({result["threads"]} threads, {result["device"]}): {torchSeconds * 1000:F1} ms for the same work; OnnxAlign / PyTorch time {onnxAlignSeconds / torchSeconds:F3} (target ≤ 1)");
        return new JsonObject { ["seconds_median"] = torchSeconds, ["threads"] = result["threads"]!.GetValue<int>(), ["torch"] = result["torch"]!.GetValue<string>(),
                                ["weights"] = result["weights"]?.GetValue<string>(), ["onnxalign_over_pytorch_time"] = onnxAlignSeconds / torchSeconds };
    }

    /// <summary>A reward per prox structure: linear (closed form), k = 3 concave (Newton), k = 1 Lipschitz (branch-and-bound).</summary>
    private static IEnumerable<(string Spec, double Lambda)> ProxWorkloads(IReadOnlyList<int> shape)
    {
        int size = shape.Aggregate(1, (a, b) => a * b);
        yield return ("brightness", 1.0 / size);
        if (ImageFiles.IsImage(shape)) yield return ($"color-target:{string.Join(",", Enumerable.Repeat("0.8", shape[0]))}", 1.0 / size);
        yield return ("ramp:brightness,0.1,0.3", 0.2 / size);
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
