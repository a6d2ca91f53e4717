using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using OnnxAlign.Core;
using OnnxAlign.Evaluation;
using OnnxAlign.IO;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign bench</c>: parses the flags, runs one of the library's benchmarks — <see cref="SpeedBenchmark"/> (speed
/// ratios measured in one run, never asserted in tests), <see cref="MixtureBenchmark"/> (<c>--kl-mixture</c>) or
/// <see cref="BlackBoxBenchmark"/> (<c>--black-box</c>) — prints its lines and writes its typed result as JSON
/// (<c>--out</c>). The PyTorch comparison (<c>--torch</c>) runs an external script and adds its figures under <c>pytorch</c>.
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
            // bench's figures replace an earlier file of the same name (it has no --overwrite); a folder or a missing folder is refused before the benchmark.
            if (parse.GetValue(output) is { } outFile) OutputFile.Check(outFile, overwrite: true, "bench.json");
            if (parse.GetValue(plot) is { } plotFile) OutputFile.Check(plotFile, overwrite: true, "bench.png", "--plot");
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
            bool throughputHeader = false;
            var speed = SpeedBenchmark.Run(parse.GetValue(model)!, new SpeedBenchmarkSettings { Steps = s, Batch = b, Repeats = r, Throughput = parse.GetValue(sweepBatches) },
                runtime.For(parse), new InlineProgress<ThroughputPoint>(point =>
                {
                    if (!throughputHeader) Console.WriteLine($"  throughput (DDIM {s} steps; samples/s):");
                    throughputHeader = true;
                    Console.WriteLine($"    threads {point.Threads,2}  batch {point.Batch,4}  {point.SamplesPerSecond,10:F1}");
                }));
            var figures = ReportJson.ToNode(speed).AsObject();
            if (parse.GetResult(torch) is not null)
                figures["pytorch"] = TorchComparison(parse.GetValue(torch) is { Length: > 0 } weights ? weights : speed.Model, speed.Device, s, b, r, speed.UntiltedSecondsMedian);
            Console.WriteLine($"{speed.Model}: DDIM {s} steps, batch {b}, {r} repeats (medians), device {speed.Device} (host buffers {speed.HostBuffers})");
            Console.WriteLine($"  untilted              {speed.UntiltedSecondsMedian * 1000,9:F1} ms   ({speed.SamplesPerSecondUntilted:F1} samples/s)");
            Console.WriteLine($"  tilted (exact)        {speed.TiltedSecondsMedian * 1000,9:F1} ms");
            Console.WriteLine($"  network alone         {speed.NetworkSecondsMedian * 1000,9:F1} ms");
            Console.WriteLine($"  tilted / untilted     {speed.TiltedOverUntilted,9:F3}   (target ≤ 1.05)");
            Console.WriteLine($"  sampling / network    {speed.SamplingOverNetwork,9:F3}");
            Console.WriteLine($"  bare Run loop         {speed.BareRunLoopSecondsMedian * 1000,9:F1} ms   (sampling / bare loop {speed.SamplingOverBareRunLoop:F3}, target ≤ 1.05)");
            Console.WriteLine($"  peak working set      {speed.PeakWorkingSetMb,9:F0} MB");
            Console.WriteLine($"  prox stage ({Environment.ProcessorCount} workers; per sample vs one network evaluation per sample):");
            foreach (var p in speed.Prox)
                Console.WriteLine($"    {p.Reward,-26} λ={p.Lambda,-9:G3} {p.Algorithm,-28} {p.SamplesPerSecond,9:F1} samples/s   {p.PerSampleOverNetworkEvaluation,8:F2}×");
            if (parse.GetValue(output) is { } path)
                ReportJson.WriteFile(path, figures);
            return 0;
        });
        return command;
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
}
