using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxAlign.Core;

namespace OnnxAlign.Model;

/// <summary>
/// The base law: an ONNX Runtime session wrapped as an <see cref="IDenoiser"/> (DESIGN §6–§7). Inputs are bound by
/// name from the session's metadata (<c>sample</c>, <c>timestep</c>, optional <c>encoder_hidden_states</c>, or the
/// only inputs of matching rank); a conditional network is fed its hidden states per row through
/// <see cref="IConditionalDenoiser"/> (DESIGN §9), the timestep is converted to the dtype and shape the exporter chose (scalar, [1]
/// or [B]; int64, int32, float, double or float16), and a model with a fixed batch size is fed in chunks. The sample
/// and output may be float32 or float16 (a half-precision export for the GPU); the sampler always works in float32.
/// Inputs and outputs go through an I/O binding allocated once per chunk size and reused across steps, placed where
/// it pays on the session's device (see <see cref="Binding"/>).
/// </summary>
/// <remarks>Thread-safe: calls on one instance are serialised (they share buffers). For parallel generation open
/// one denoiser per thread; each owns its session.</remarks>
public sealed class OnnxDenoiser : IConditionalDenoiser, IDisposable
{
    private readonly InferenceSession _session;
    private readonly string _path;
    private readonly PredictionType _predictionType;
    private readonly string _sampleName, _timestepName, _outputName;
    private readonly string? _conditioningName;
    private readonly int? _conditioningLength, _conditioningWidth;   // null where the export left it dynamic
    private readonly TensorElementType _sampleType;        // Float or Float16; the output has the same type
    private readonly TensorElementType _timestepType;
    private readonly TensorElementType _conditioningType;
    private readonly OrtAllocator _hostAllocator;         // the host buffers of sample and output
    private readonly bool _ownsHostAllocator;
    private readonly int _timestepRank;        // 0 = scalar, 1 = vector
    private readonly int _fixedTimestepLength; // > 0 when the timestep vector has a fixed length
    private readonly int _fixedBatch;          // > 0 when the model's batch dimension is fixed
    private readonly int[] _sampleShape;
    private readonly Dictionary<int, Binding> _bindings = [];
    private readonly object _gate = new();
    private bool _disposed;

    /// <summary>Opens <paramref name="onnxPath"/> for the given schedule.</summary>
    /// <exception cref="ConfigException">The file is not a usable ONNX model, its inputs match no supported convention,
    /// or the requested device is not available.</exception>
    public OnnxDenoiser(string onnxPath, NoiseSchedule schedule, DenoiserOptions options)
    {
        Schedule = schedule;
        _path = onnxPath;
        _predictionType = schedule.Config.PredictionType;
        Device = options.Device;
        _session = OpenSession(onnxPath, options);
        try
        {
            (_hostAllocator, _ownsHostAllocator, HostMemory) = HostBuffers(_session, options);
            var inputs = _session.InputMetadata;
            _sampleName = PickInput(onnxPath, inputs, "sample", m => m.Dimensions.Length is 2 or 4 && m.ElementDataType is TensorElementType.Float or TensorElementType.Float16);
            _timestepName = PickInput(onnxPath, inputs, "timestep", m => m.Dimensions.Length <= 1, exclude: _sampleName);
            var sample = inputs[_sampleName];
            var timestep = inputs[_timestepName];
            _sampleType = sample.ElementDataType;
            if (_sampleType is not (TensorElementType.Float or TensorElementType.Float16))
                throw new ConfigException($"{onnxPath}: input '{_sampleName}' is {sample.ElementDataType}, expected float32 or float16");
            _timestepType = timestep.ElementDataType;
            if (_timestepType is not (TensorElementType.Int64 or TensorElementType.Int32 or TensorElementType.Float or TensorElementType.Double or TensorElementType.Float16))
                throw new ConfigException($"{onnxPath}: input '{_timestepName}' is {_timestepType}, expected int64, int32, float, double or float16");
            _timestepRank = timestep.Dimensions.Length;
            if (_timestepRank > 1)
                throw new ConfigException($"{onnxPath}: input '{_timestepName}' has rank {_timestepRank}, expected a scalar, [1] or [batch]");
            _fixedTimestepLength = _timestepRank == 1 && timestep.Dimensions[0] > 0 ? timestep.Dimensions[0] : 0;

            _fixedBatch = sample.Dimensions[0] > 0 ? sample.Dimensions[0] : 0;
            _sampleShape = ResolveSampleShape(onnxPath, sample, options.SampleShape);
            SampleSize = _sampleShape.Aggregate(1, (a, b) => a * b);
            if (_fixedTimestepLength > 1 && _fixedTimestepLength != _fixedBatch)
                throw new ConfigException($"{onnxPath}: input '{_timestepName}' has fixed length {_fixedTimestepLength} but the batch is {(_fixedBatch > 0 ? _fixedBatch : "dynamic")}");

            var extra = inputs.Keys.Where(k => k != _sampleName && k != _timestepName).ToList();
            if (extra.Count > 1 || (extra.Count == 1 && extra[0] != "encoder_hidden_states"))
                throw new ConfigException($"{onnxPath}: unexpected inputs {string.Join(", ", extra)} (supported: sample, timestep, optional encoder_hidden_states)");
            if (extra.Count == 1)
            {
                var meta = inputs[extra[0]];
                if (meta.Dimensions.Length != 3)
                    throw new ConfigException($"{onnxPath}: encoder_hidden_states has rank {meta.Dimensions.Length}, expected [batch, sequence, width]");
                if (meta.ElementDataType is not (TensorElementType.Float or TensorElementType.Float16))
                    throw new ConfigException($"{onnxPath}: encoder_hidden_states is {meta.ElementDataType}, expected float32 or float16");
                _conditioningType = meta.ElementDataType;
                _conditioningName = extra[0];
                _conditioningLength = meta.Dimensions[1] > 0 ? meta.Dimensions[1] : null;
                _conditioningWidth = meta.Dimensions[2] > 0 ? meta.Dimensions[2] : null;
            }

            var outputs = _session.OutputMetadata;
            _outputName = outputs.Count == 1 ? outputs.Keys.First()
                : outputs.ContainsKey("out_sample") ? "out_sample"
                : throw new ConfigException($"{onnxPath}: {outputs.Count} outputs and none named out_sample");
            if (outputs[_outputName].ElementDataType != _sampleType)
                throw new ConfigException($"{onnxPath}: output '{_outputName}' is {outputs[_outputName].ElementDataType} but the sample is {_sampleType}; expected the same type");
            var outDims = outputs[_outputName].Dimensions;
            if (outDims.Length != sample.Dimensions.Length
                || outDims.Skip(1).Zip(_sampleShape).Any(p => p.First > 0 && p.First != p.Second))
                throw new ConfigException($"{onnxPath}: output '{_outputName}' has shape [{string.Join(", ", outDims)}], expected the sample's shape [B, {string.Join(", ", _sampleShape)}]");
        }
        catch
        {
            if (_ownsHostAllocator) _hostAllocator?.Dispose();
            _session.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public IReadOnlyList<int> SampleShape => _sampleShape;

    /// <inheritdoc/>
    public int SampleSize { get; }

    /// <inheritdoc/>
    public NoiseSchedule Schedule { get; }

    /// <summary>The device the session runs on.</summary>
    public string Device { get; }

    /// <summary>
    /// Where the host side of the sample and output lives: <c>cpu</c>, or on CUDA <c>cuda-pinned</c> (page-locked, one
    /// DMA transfer per crossing) or <c>pageable (…why…)</c> when the CUDA build offered no pinned allocator.
    /// </summary>
    public string HostMemory { get; }

    /// <summary>The element type of the network's sample and output (float32, or float16 for a half-precision export).</summary>
    public TensorElementType SampleElementType => _sampleType;

    /// <summary>The batch size the model requires, or null when its batch dimension is dynamic.</summary>
    public int? FixedBatchSize => _fixedBatch > 0 ? _fixedBatch : null;

    /// <inheritdoc/>
    public (int? Length, int? Width)? ConditioningShape => _conditioningName is null ? null : (_conditioningLength, _conditioningWidth);

    /// <summary>A one-paragraph description of the bound inputs and output (for <c>onnxalign inspect</c>).</summary>
    public string Describe() => DescribeSession(_session) + Environment.NewLine + $"  device {Device}, host buffers {HostMemory}";

    /// <summary>The inputs and outputs of a session, one line each (names, element types, dimensions or their symbols).</summary>
    internal static string DescribeSession(InferenceSession session)
    {
        static string Dims(NodeMetadata m) => "[" + string.Join(", ", m.Dimensions.Select((d, i) => d > 0 ? d.ToString() : m.SymbolicDimensions[i] is { Length: > 0 } s ? s : "?")) + "]";
        var lines = session.InputMetadata.Select(kv => $"  input  {kv.Key}: {kv.Value.ElementDataType} {Dims(kv.Value)}")
            .Concat(session.OutputMetadata.Select(kv => $"  output {kv.Key}: {kv.Value.ElementDataType} {Dims(kv.Value)}"));
        return string.Join(Environment.NewLine, lines);
    }

    /// <summary>
    /// ε̂(x, t). A conditional network is fed zeros as <c>encoder_hidden_states</c> here, which is the network's
    /// output at zero conditioning, <em>not</em> its unconditional law (that is the empty prompt's encoding, DESIGN §9):
    /// condition it with <see cref="PredictNoise(ReadOnlySpan{float}, int, double, EmbeddingRows, Span{float})"/>.
    /// </summary>
    /// <exception cref="ConfigException">The network's hidden-state shape is dynamic, so no zeros can be made for it.</exception>
    public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise) => Predict(x, batchSize, timestep, null, noise);

    /// <inheritdoc/>
    public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, EmbeddingRows conditioning, Span<float> noise)
    {
        if (conditioning.Embeddings is not { Count: > 0 } embeddings || conditioning.RowsPerEmbedding < 1)
            throw new ArgumentException("no embeddings", nameof(conditioning));
        if (conditioning.Rows != batchSize)
            throw new ArgumentException($"the conditioning covers {conditioning.Rows} rows, the batch has {batchSize}", nameof(conditioning));
        var first = embeddings[0];
        if (embeddings.Any(e => e.Length != first.Length || e.Width != first.Width))
            throw new ArgumentException("the embeddings of one batch have one shape", nameof(conditioning));
        first.CheckFits(this, _path);
        Predict(x, batchSize, timestep, conditioning, noise);
    }

    private void Predict(ReadOnlySpan<float> x, int batchSize, double timestep, EmbeddingRows? conditioning, Span<float> noise)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int size = SampleSize;
        if (x.Length != batchSize * size || noise.Length != x.Length)
            throw new ArgumentException($"expected {batchSize} × {size} values");
        var (alpha, sigma) = Schedule.AlphaSigma(timestep);
        var cancellation = NetworkCancellation.Current;
        cancellation.ThrowIfCancellationRequested();
        lock (_gate)
        {
            int chunk = _fixedBatch > 0 ? _fixedBatch : batchSize;
            var binding = BindingFor(chunk);
            binding.SetTimestep(timestep);
            for (int start = 0; start < batchSize; start += chunk)
            {
                int n = Math.Min(chunk, batchSize - start);
                binding.WriteConditioning(conditioning, start, n);
                binding.WriteSample(x.Slice(start * size, n * size));
                binding.Run(cancellation);
                binding.ReadOutput(noise.Slice(start * size, n * size));
            }
        }
        Prediction.ToNoise(_predictionType, x, noise, alpha, sigma);
    }

    /// <summary>
    /// Runs one sample (zeros) through the network at the last training timestep: a network that loads but cannot run
    /// (an output batch that is not its input's) is found here, before a caller writes anything.
    /// </summary>
    /// <exception cref="ConfigException">The network fails on real input.</exception>
    public void Probe()
    {
        var x = new float[SampleSize];
        PredictNoise(x, 1, Schedule.Config.NumTrainTimesteps - 1, new float[SampleSize]);
    }

    /// <summary>
    /// For benchmarks: the wall time of <paramref name="runs"/> bare <c>session.Run</c> calls on one batch of
    /// <paramref name="batchSize"/> with this denoiser's own pre-bound tensors, i.e. the floor of any sampling loop
    /// over this network (no sampler arithmetic, no conversions, no copies).
    /// </summary>
    public TimeSpan TimeBareRuns(int batchSize, int runs, double timestep = 500)
    {
        lock (_gate)
        {
            var binding = BindingFor(_fixedBatch > 0 ? _fixedBatch : batchSize);
            binding.SetTimestep(timestep);
            binding.WriteConditioning(null, 0, 0);
            binding.FillSyntheticSample();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            for (int r = 0; r < runs; r++) binding.Run();
            return clock.Elapsed;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var b in _bindings.Values) b.Dispose();
        if (_ownsHostAllocator) _hostAllocator.Dispose();
        _session.Dispose();
    }

    /// <summary>
    /// The allocator of the host buffers: on CUDA the execution provider's pinned (page-locked) allocator, so that the
    /// per-step copies are direct DMA transfers; otherwise ONNX Runtime's CPU allocator.
    /// </summary>
    private static (OrtAllocator Allocator, bool Owned, string Description) HostBuffers(InferenceSession session, DenoiserOptions options)
    {
        if (options.CudaDeviceId is not { } deviceId) return (OrtAllocator.DefaultInstance, false, "cpu");
        try
        {
            using var pinned = new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA_PINNED, OrtAllocatorType.DeviceAllocator, deviceId, OrtMemType.CpuOutput);
            return (new OrtAllocator(session, pinned), true, "cuda-pinned");
        }
        catch (OnnxRuntimeException e)
        {
            // Still correct, only each copy goes through a staging buffer.
            return (OrtAllocator.DefaultInstance, false, $"pageable (no pinned allocator: {FirstLine(e.Message)})");
        }
    }

    private Binding BindingFor(int chunk)
    {
        if (!_bindings.TryGetValue(chunk, out var binding))
        {
            // Keep a handful of chunk sizes (the last batch of a run is often smaller).
            if (_bindings.Count >= 4)
            {
                foreach (var b in _bindings.Values) b.Dispose();
                _bindings.Clear();
            }
            binding = new Binding(this, chunk);
            _bindings[chunk] = binding;
        }
        return binding;
    }

    /// <summary>An ONNX Runtime session with the project's options (threads, denormals, device), errors as <see cref="ConfigException"/>.</summary>
    internal static InferenceSession OpenSession(string onnxPath, DenoiserOptions options)
    {
        if (!File.Exists(onnxPath)) throw new ConfigException($"{onnxPath}: no such file");
        var so = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            IntraOpNumThreads = options.IntraOpThreads ?? Environment.ProcessorCount,
        };
        // Shifted inputs (a tilt evaluates the network far from its data, DESIGN §1b) drive saturating activations
        // into denormal floats, which are many times slower on x86; flushing them to zero changes no result visibly.
        so.AddSessionConfigEntry("session.set_denormal_as_zero", "1");
        try
        {
            if (options.CudaDeviceId is { } deviceId)
            {
                if (!OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider"))
                    throw new ConfigException(
                        $"DenoiserOptions.Device {options.Device}: this ONNX Runtime build has no CUDA support. Build with " +
                        "-p:OnnxRuntimePackage=Microsoft.ML.OnnxRuntime.Gpu.Linux -p:OnnxRuntimeVersion=1.31.0 (CUDA 13 + cuDNN 9 installed) to use a GPU; see README, Troubleshooting.", "DenoiserOptions.Device");
                try { so.AppendExecutionProvider_CUDA(deviceId); }
                catch (OnnxRuntimeException e)
                {
                    throw ConfigException.For("DenoiserOptions.Device", $"{options.Device}: the CUDA execution provider could not start ({e.Message}). Check the CUDA/cuDNN install and the device index.", e);
                }
            }
            options.ConfigureSession?.Invoke(so);
            return new InferenceSession(onnxPath, so);
        }
        catch (OnnxRuntimeException e) when (options.CudaDeviceId is not null)
        {
            // The CUDA provider creates its device context with the session: a missing GPU or CUDA library shows here.
            throw ConfigException.For("DenoiserOptions.Device", $"{onnxPath}: no session on {options.Device} ({FirstLine(e.Message)}). Check the CUDA/cuDNN install and the device index, or try the model on the CPU.", e);
        }
        catch (OnnxRuntimeException e)
        {
            throw new ConfigException($"{onnxPath}: not a usable ONNX model ({FirstLine(e.Message)})", e);
        }
        finally
        {
            so.Dispose();
        }
    }

    private static string FirstLine(string s) => s.Split('\n')[0].Trim();

    private static string PickInput(string path, IReadOnlyDictionary<string, NodeMetadata> inputs, string name, Func<NodeMetadata, bool> fits, string? exclude = null)
    {
        if (inputs.ContainsKey(name)) return name;
        var candidates = inputs.Where(kv => kv.Key != exclude && kv.Key != "encoder_hidden_states" && kv.Value.IsTensor && fits(kv.Value)).Select(kv => kv.Key).ToList();
        return candidates.Count == 1
            ? candidates[0]
            : throw new ConfigException($"{path}: cannot tell which input is the {name} (inputs: {string.Join(", ", inputs.Keys)}); name it '{name}'");
    }

    private static int[] ResolveSampleShape(string path, NodeMetadata sample, IReadOnlyList<int>? requested)
    {
        var dims = sample.Dimensions.Skip(1).ToArray();
        if (requested is not null)
        {
            if (requested.Count != dims.Length || requested.Zip(dims).Any(p => p.First <= 0 || (p.Second > 0 && p.Second != p.First)))
                throw new ConfigException($"{path}: sample shape [{string.Join(", ", requested)}] does not fit input [{string.Join(", ", sample.Dimensions)}]");
            return requested.ToArray();
        }
        if (dims.Any(d => d <= 0))
            throw new ConfigException($"{path}: the sample's shape [{string.Join(", ", sample.Dimensions)}] is dynamic; give it with {OnnxAlignException.Option("DenoiserOptions.SampleShape")} (e.g. 3x64x64)");
        return dims;
    }

    /// <summary>
    /// The I/O binding of one chunk size, reused across steps (ONNX Runtime's <c>OrtIoBinding</c>). ONNX Runtime copies
    /// a bound input to the session's device when it is bound, not at each run, so the placement follows what changes:
    /// <list type="bullet">
    /// <item>the conditioning input is the same for the whole run: bound once, so on CUDA it stays on the device;</item>
    /// <item>the sample changes at every step (the sampler's arithmetic is on the host): it is re-bound before each
    /// run from a host buffer, and the output is bound once to a host buffer the network's result is copied into.
    /// On CUDA both buffers are page-locked (CUDA-pinned) memory, so each crossing is one DMA transfer with no
    /// staging copy and no per-run allocation; on the CPU they are the tensors the kernels read and write;</item>
    /// <item>the timestep is re-bound once per call.</item>
    /// </list>
    /// A float16 network's sample and output are converted here, at the host buffers (TensorPrimitives).
    /// </summary>
    private sealed class Binding : IDisposable
    {
        private readonly OnnxDenoiser _owner;
        private readonly OrtIoBinding _io;
        private readonly OrtValue _sample, _output, _timestep;
        private readonly int _chunk, _length;
        private OrtValue? _conditioning;
        private (int Length, int Width) _conditioningShape;
        private TextEmbedding[]? _writtenEmbeddings;          // what the bound conditioning holds: these embeddings (null: zeros) …
        private (int RowsPerEmbedding, int Start, int Count) _writtenLayout = (-1, -1, -1);   // … in this layout

        public Binding(OnnxDenoiser owner, int chunk)
        {
            _owner = owner;
            _chunk = chunk;
            _length = chunk * owner.SampleSize;
            long[] shape = [chunk, .. owner._sampleShape.Select(d => (long)d)];
            int timestepLength = owner._timestepRank == 0 ? 1 : owner._fixedTimestepLength > 0 ? owner._fixedTimestepLength : chunk;
            long[] timestepShape = owner._timestepRank == 0 ? [] : [timestepLength];
            var host = owner._hostAllocator;
            _io = owner._session.CreateIoBinding();
            try
            {
                _sample = OrtValue.CreateAllocatedTensorValue(host, owner._sampleType, shape);
                _output = OrtValue.CreateAllocatedTensorValue(host, owner._sampleType, shape);
                _timestep = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, owner._timestepType, timestepShape);
                _io.BindOutput(owner._outputName, _output);
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public RunOptions RunOptions { get; } = new();

        /// <summary>Sets the timestep of the following runs (every row the same).</summary>
        public void SetTimestep(double t)
        {
            switch (_owner._timestepType)
            {
                case TensorElementType.Int64: _timestep.GetTensorMutableDataAsSpan<long>().Fill((long)Math.Round(t)); break;
                case TensorElementType.Int32: _timestep.GetTensorMutableDataAsSpan<int>().Fill((int)Math.Round(t)); break;
                case TensorElementType.Double: _timestep.GetTensorMutableDataAsSpan<double>().Fill(t); break;
                case TensorElementType.Float16: MemoryMarshal.Cast<byte, Half>(_timestep.GetTensorMutableRawData()).Fill((Half)t); break;
                default: _timestep.GetTensorMutableDataAsSpan<float>().Fill((float)t); break;
            }
            _io.BindInput(_owner._timestepName, _timestep);
        }

        /// <summary>
        /// Binds the hidden states of batch rows <paramref name="start"/> … <paramref name="start"/> + <paramref name="count"/> − 1
        /// (zeros when <paramref name="rows"/> is null). What is bound stays bound (on CUDA: on the device) until something
        /// else is needed, so a run that conditions every step alike copies its embeddings once, not at every step.
        /// </summary>
        public void WriteConditioning(EmbeddingRows? rows, int start, int count)
        {
            if (_owner._conditioningName is not { } name) return;
            // The same embeddings (by reference: they are immutable) in the same layout are bound already.
            var layout = rows is { } current ? (current.RowsPerEmbedding, start, count) : (0, 0, 0);
            if (_conditioning is not null && layout == _writtenLayout
                && (rows is null ? _writtenEmbeddings is null
                                 : _writtenEmbeddings is { } bound && bound.Length == rows.Value.Embeddings.Count && bound.Select((e, i) => ReferenceEquals(e, rows.Value.Embeddings[i])).All(b => b)))
                return;
            var first = rows?.Embeddings[0];
            var shape = first is not null ? (first.Length, first.Width)
                : _owner._conditioningLength is { } l && _owner._conditioningWidth is { } w ? (l, w)
                : throw ConfigException.For("conditioning", $": {_owner._path}'s encoder_hidden_states has dynamic dimensions, so the network needs its conditioning " +
                                            "(a prompt through the model's text encoder, or encoder hidden states); zeros of an unknown shape cannot be made");
            if (_conditioning is null || shape != _conditioningShape)
            {
                _conditioning?.Dispose();
                _conditioning = null;
                _conditioning = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, _owner._conditioningType, [_chunk, shape.Item1, shape.Item2]);
                _conditioningShape = shape;
            }
            int rowSize = shape.Item1 * shape.Item2;
            var raw = _conditioning.GetTensorMutableRawData();
            raw.Clear();   // zeros: the unconditional-use case and a fixed-batch model's padding rows
            if (rows is { } given)
            {
                for (int r = 0; r < count; r++) TensorValues.Write(given.For(start + r).Values, raw, _owner._conditioningType, r * rowSize);
            }
            _io.BindInput(name, _conditioning);
            _writtenEmbeddings = rows?.Embeddings.ToArray();
            _writtenLayout = layout;
        }

        /// <summary>Writes <paramref name="rows"/> (a multiple of the sample size) into the input, zeros after them.</summary>
        public void WriteSample(ReadOnlySpan<float> rows)
        {
            var raw = _sample.GetTensorMutableRawData();
            TensorValues.Write(rows, raw, _owner._sampleType);
            int elementSize = _owner._sampleType == TensorElementType.Float16 ? 2 : 4;
            raw[(rows.Length * elementSize)..].Clear();   // padding of a fixed-batch model's last chunk
        }

        /// <summary>Fills <paramref name="rows"/> from the start of the output.</summary>
        public void ReadOutput(Span<float> rows) => TensorValues.Read(_output.GetTensorMutableRawData(), _owner._sampleType, rows);

        /// <summary>
        /// One network evaluation of the whole chunk: binds the sample (the copy to a device happens here), runs, and
        /// waits for the output. A cancellation during the run ends it through <c>RunOptions.Terminate</c>.
        /// </summary>
        public void Run(CancellationToken cancellation = default)
        {
            _io.BindInput(_owner._sampleName, _sample);
            RunOptions.Terminate = false;
            try
            {
                using (cancellation.CanBeCanceled ? cancellation.Register(() => RunOptions.Terminate = true) : default)
                    _owner._session.RunWithBinding(RunOptions, _io);
                cancellation.ThrowIfCancellationRequested();   // terminated just as it finished: the output is not this run's to trust
                _io.SynchronizeBoundOutputs();
            }
            catch (OnnxRuntimeException e) when (cancellation.IsCancellationRequested)
            {
                throw new OperationCanceledException("the network call was cancelled (RunOptions.Terminate)", e, cancellation);
            }
            catch (OnnxRuntimeException e)
            {
                // A network that passed the load checks but fails on real input: most often an output whose shape is not
                // the input's (a batch that differs), which its metadata left dynamic.
                throw new ConfigException($"{_owner._path}: the network failed on a batch of {_length / _owner.SampleSize} samples " +
                                          $"({FirstLine(e.Message)}); its output must have the sample's shape [batch, {string.Join(", ", _owner._sampleShape)}]", e);
            }
            finally
            {
                RunOptions.Terminate = false;
            }
        }

        /// <summary>Fills the input with finite, data-like values (for <see cref="TimeBareRuns"/>).</summary>
        public void FillSyntheticSample()
        {
            var rows = new float[_length];
            for (int i = 0; i < rows.Length; i++) rows[i] = (i * 0.618034f) % 2 - 1;
            WriteSample(rows);
        }

        public void Dispose()
        {
            _io?.Dispose();
            _sample?.Dispose();
            _output?.Dispose();
            _timestep?.Dispose();
            _conditioning?.Dispose();
            RunOptions.Dispose();
        }
    }
}
